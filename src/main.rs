//! The `gpulse` binary: a thin shell around [`gpulse::cli::main`].

fn main() -> std::process::ExitCode {
    gpulse::cli::main()
}
