fn main() -> std::process::ExitCode {
    // SAFETY: the first thing the process does, before any thread or git call.
    unsafe { ferry::git_runtime::init_without_ca_bundle() };
    ferry::cli::run()
}
