//! Compiles `proto/ecma/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/ecma/v1/connector.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Optional operations (hierarchy, lookup, passwords, ...) answer UNIMPLEMENTED unless a
        // connector overrides them.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
