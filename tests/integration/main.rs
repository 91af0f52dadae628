//! Integration tests: the real binary, real HTTP on 127.0.0.1, a real
//! SQLite file. One test binary (modules below) so it links once.

mod bad_input;
mod budgets;
mod cli;
mod concurrency;
mod crash;
mod download;
mod export_rollback;
mod fake_arm;
mod fake_http;
mod faults;
mod fidelity;
mod lean_history;
mod new_kinds;
mod notify;
mod ops;
mod props;
mod replay;
mod run_path;
mod targets;
mod throttling;
mod util;
mod world;
