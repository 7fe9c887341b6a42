//! Embeds an rpath to the libpython PyO3 linked against, so `spillway` runs without
//! LD_LIBRARY_PATH. Without the `python` feature there is nothing to link.
fn main() {
    #[cfg(feature = "python")]
    {
        let cfg = pyo3_build_config::get();
        if let Some(dir) = cfg.lib_dir() {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
