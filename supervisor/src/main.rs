// glibc's malloc was the largest single cost of a SCIM write in profiles (many small, short-lived
// allocations crossing threads); mimalloc took about 7% off the supervisor's CPU per create.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process and the connectors it starts (inherited). mimalloc
    // asks for them on its arenas, so each page it hands back to the kernel and touches again is a
    // fresh 2 MiB page for the kernel to zero: about 2.5% of the supervisor's CPU under SCIM
    // creates went to that alone (docs/BENCHMARKS.md, session 12). Where the call is refused
    // (an old kernel, a seccomp profile), nothing else depends on it.
    let _ = nix::sys::prctl::set_thp_disable(true);
    supervisor::cli::main()
}
