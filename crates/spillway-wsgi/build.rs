//! Embeds an rpath to the libpython PyO3 linked against (so nothing needs LD_LIBRARY_PATH)
//! and records that interpreter's path for `sys.executable`.
fn main() {
    let cfg = pyo3_build_config::get();
    if let Some(dir) = cfg.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if let Some(exe) = cfg.executable() {
        println!("cargo:rustc-env=SPILLWAY_BUILD_PYTHON={exe}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
