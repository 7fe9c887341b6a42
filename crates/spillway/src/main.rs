//! The `spillway` executable: the front, `doctor`, `bench` and `reload`. Its workers run in
//! a Python interpreter that loads the worker module built beside it (`libspillway.so`, or
//! `../lib/spillway/libspillway.so` where a package installed it).

fn main() -> std::process::ExitCode {
    spillway::main(
        std::env::args_os().collect(),
        &spillway::interpreter::Host::standalone(),
    )
}
