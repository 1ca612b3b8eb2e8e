// glibc's malloc was the largest single cost of a SCIM write in profiles (many small, short-lived
// allocations crossing threads); mimalloc took about 7% off the supervisor's CPU per create.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    supervisor::cli::main()
}
