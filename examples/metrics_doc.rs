//! Prints the README's metric table from the registry itself, so the
//! documentation cannot drift from the code (a test checks the names):
//!
//!     cargo run --example metrics_doc
fn main() {
    let m = tagsync::metrics::metrics();
    let text = m.render();
    println!("| metric | type | help |");
    println!("|---|---|---|");
    for (name, help) in m.catalogue() {
        let kind = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
            .unwrap_or(if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            });
        println!("| `{name}` | {kind} | {help} |");
    }
}
