//! The `notifyd` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    notifyd::main()
}
