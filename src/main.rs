fn main() -> std::process::ExitCode {
    pluspay::cli::main()
}
