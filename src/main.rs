fn main() -> std::process::ExitCode {
    tagsync::commands::main()
}
