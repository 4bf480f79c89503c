//! File-or-folder inputs and outputs of the image commands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pyra_tasks::image::list_images;

/// Pairs (input, output) for `IN OUT`, each a file or a folder. With a folder, every image in it
/// maps to `OUT/<stem>.<extension>` and OUT is created.
pub fn plan(input: &Path, output: &Path, extension: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    if input.is_dir() {
        let files =
            list_images(input).with_context(|| format!("cannot list {}", input.display()))?;
        if files.is_empty() {
            bail!("{} holds no PNG, JPEG, TIFF or BMP images", input.display());
        }
        if output.exists() && !output.is_dir() {
            bail!(
                "{} is a folder, so the output {} must be a folder too",
                input.display(),
                output.display()
            );
        }
        std::fs::create_dir_all(output)
            .with_context(|| format!("cannot create the output folder {}", output.display()))?;
        Ok(files
            .into_iter()
            .map(|f| {
                let stem = f.file_stem().unwrap_or_default().to_owned();
                let out = output.join(stem).with_extension(extension);
                (f, out)
            })
            .collect())
    } else if input.is_file() {
        if output.is_dir() {
            let stem = input.file_stem().unwrap_or_default().to_owned();
            return Ok(vec![(
                input.to_path_buf(),
                output.join(stem).with_extension(extension),
            )]);
        }
        if output.extension().and_then(|e| e.to_str()) != Some(extension) {
            bail!("the output {} must end in .{extension}", output.display());
        }
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            if parent.exists() && !parent.is_dir() {
                bail!(
                    "cannot write {}: {} is a file, not a folder; choose another output path",
                    output.display(),
                    parent.display()
                );
            }
            if !parent.is_dir() {
                bail!(
                    "the output folder {} does not exist; create it first",
                    parent.display()
                );
            }
        }
        Ok(vec![(input.to_path_buf(), output.to_path_buf())])
    } else {
        bail!("{} does not exist", input.display())
    }
}
