#![forbid(unsafe_code)]
//! The `patgate` binary: all of it is in the library.

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// buffers on two or more worker threads, where glibc spent about a fifth of the CPU (and
/// contended on its arena locks). BENCHMARKS.md has the before and after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    patgate::cli::main()
}
