#![forbid(unsafe_code)]
//! The `patgate` binary: all of it is in the library.

fn main() -> std::process::ExitCode {
    patgate::cli::main()
}
