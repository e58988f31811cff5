fn main() -> std::process::ExitCode {
    ferry::cli::run()
}
