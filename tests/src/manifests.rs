//! The repository's manifests (`manifests/`), read document by document as kubectl
//! splits a multi-document YAML file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The path of `manifests/<file>`.
pub fn path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests").join(file)
}

/// The non-empty documents of `manifests/<file>`, as JSON values.
pub fn documents(file: &str) -> Result<Vec<Value>> {
    let path = path(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}
