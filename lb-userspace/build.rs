//! Builds the XDP programs (`lb-ebpf`) for bpfel-unknown-none with the
//! nightly toolchain through aya-build; `src/dataplane/xdp.rs` embeds the
//! resulting object. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("lb-ebpf manifest has no parent"))?;
    // The programs' map layouts come from lb-common: rebuild them when it
    // changes (aya-build watches only the eBPF crate's own sources).
    let common = root_dir
        .parent()
        .ok_or_else(|| anyhow!("lb-ebpf has no parent directory"))?
        .join("lb-common");
    println!("cargo:rerun-if-changed={common}");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
