//! The thin binary: parse the command line and hand over to `dcguard::cli`.

fn main() -> std::process::ExitCode {
    dcguard::cli::main()
}
