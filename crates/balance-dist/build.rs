//! Compiles the c10d shim (`csrc/c10d_shim.cpp`) against the libtorch that tch links (`LIBTORCH`) and
//! gloo's headers (`BALANCE_GLOO_INCLUDE`, else the workspace's `.gloo/include` that
//! `scripts/setup-gloo.sh` fills; `make setup` runs it).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    for var in [
        "LIBTORCH",
        "BALANCE_GLOO_INCLUDE",
        "BALANCE_NCCL_INCLUDE",
        "BALANCE_CUDA_INCLUDE",
        "LIBTORCH_CXX11_ABI",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var("DOCS_RS").is_ok() {
        return;
    }
    let Some(libtorch) = env::var_os("LIBTORCH").map(PathBuf::from) else {
        fail("LIBTORCH is not set: point it at the libtorch that tch uses (`make setup` installs one at .libtorch and the Makefile exports it)");
    };
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let gloo = env::var_os("BALANCE_GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../.gloo/include"));
    if !gloo.join("gloo/context.h").exists() {
        fail(&format!(
            "gloo's headers are not at {} (gloo/context.h): run scripts/setup-gloo.sh (`make setup` does) or set BALANCE_GLOO_INCLUDE",
            gloo.display()
        ));
    }
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/c10d_shim.cpp")
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("USE_DISTRIBUTED", None)
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false)
        .extra_warnings(false)
        .flag_if_supported("-w");
    let lib = libtorch.join("lib");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if env::var_os("CARGO_FEATURE_NCCL").is_some() {
        let nccl = env::var_os("BALANCE_NCCL_INCLUDE")
            .map(PathBuf::from)
            .unwrap_or_else(|| libtorch.join("../nvidia/nccl/include"));
        if !nccl.join("nccl.h").exists() {
            fail(&format!(
                "feature `nccl`: nccl.h is not at {} (set BALANCE_NCCL_INCLUDE)",
                nccl.display()
            ));
        }
        // The CUDA toolkit headers that c10d's CUDA headers include (the wheel's nvidia/cu13 package).
        let cuda = env::var_os("BALANCE_CUDA_INCLUDE")
            .map(PathBuf::from)
            .unwrap_or_else(|| libtorch.join("../nvidia/cu13/include"));
        if !cuda.join("cuda.h").exists() {
            fail(&format!(
                "feature `nccl`: cuda.h is not at {} (set BALANCE_CUDA_INCLUDE)",
                cuda.display()
            ));
        }
        build
            .include(nccl)
            .include(cuda)
            .define("USE_C10D_NCCL", None)
            .define("BALANCE_WITH_NCCL", None);
        // Keep libtorch_cuda even though no Rust code names its symbols.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    build.compile("balance_c10d_shim");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

fn fail(message: &str) -> ! {
    eprintln!("balance-dist: {message}");
    std::process::exit(1);
}
