//! Compiles the small C shim in front of the system's libjpeg-turbo (Debian's
//! libjpeg62-turbo-dev, present on the build machines): libjpeg reports
//! errors by longjmp, which must stay on the C side.
fn main() {
    println!("cargo:rerun-if-changed=src/decode/jpeg_shim.c");
    cc::Build::new().file("src/decode/jpeg_shim.c").warnings(true).compile("pear_jpeg_shim");
    println!("cargo:rustc-link-lib=jpeg");
}
