// Builds the small C bridge to the system IJG libjpeg API (libjpeg-turbo's libjpeg.so on
// Debian, package libjpeg62-turbo-dev / libjpeg-dev). See csrc/ijg_jpeg.c for why.
fn main() {
    println!("cargo:rerun-if-changed=csrc/ijg_jpeg.c");
    cc::Build::new()
        .file("csrc/ijg_jpeg.c")
        .warnings(true)
        .compile("pyra_ijg_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}
