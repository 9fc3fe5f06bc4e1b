//! The `chroma-ha` binary: a thin shell over the library (see `cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    chroma_ha::cli::main()
}
