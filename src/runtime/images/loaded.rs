//! Marks on images that `kcluster image load` put on the node. Such an image is local by
//! nature: the registry its name points at may never have heard of it, so a pull of it that
//! fails for any reason falls back to it (see `kubelet::images`). A mark names the image id it
//! was made for: once a pull moves the name to another image, the mark no longer applies.
//!
//! ```text
//! <state>/images/loaded.json   {"names": {"docker.io/library/app:latest": "sha256:<id>"}}
//! ```

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Image, Store, write_atomic};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Marks {
    #[serde(default)]
    names: BTreeMap<String, String>,
}

impl Store {
    fn marks_path(&self) -> std::path::PathBuf {
        self.images.join("loaded.json")
    }

    fn read_marks(&self) -> Result<Marks> {
        let path = self.marks_path();
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).with_context(|| {
                format!(
                    "{} is damaged; remove it and load the images again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Marks::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Marks every name of `images` as loaded onto the node (not pulled).
    pub fn mark_loaded(&self, images: &[Image]) -> Result<()> {
        let mut lock = self.lock()?;
        let _guard = lock.write().context("cannot lock the image index")?;
        let mut marks = self.read_marks()?;
        for image in images {
            for name in &image.names {
                marks.names.insert(name.clone(), image.id.clone());
            }
        }
        // Marks of names that now belong to other images are dead weight.
        let index = self.read_index()?;
        marks.names.retain(|name, id| {
            index
                .images
                .iter()
                .any(|i| &i.id == id && i.names.contains(name))
        });
        let data = serde_json::to_vec_pretty(&marks).context("cannot encode the loaded marks")?;
        write_atomic(&self.marks_path(), &data)
    }

    /// Whether `image`, found under the full name `name`, is there because it was loaded.
    pub fn is_loaded(&self, name: &str, image: &Image) -> bool {
        match self.read_marks() {
            Ok(marks) => marks.names.get(name) == Some(&image.id),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot read the loaded-image marks"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_image(store: &Store, config: &[u8], names: &[&str]) -> Image {
        let id = store.put_blob(config).unwrap();
        let image = Image {
            id,
            names: names.iter().map(|n| n.to_string()).collect(),
            manifest: None,
            layers: Vec::new(),
            size: 0,
        };
        store.add(image.clone()).unwrap();
        image
    }

    #[test]
    fn a_mark_follows_the_image_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let name = "docker.io/library/app:latest";
        let loaded = add_image(&store, b"{\"a\":1}", &[name]);
        assert!(!store.is_loaded(name, &loaded));
        store.mark_loaded(std::slice::from_ref(&loaded)).unwrap();
        assert!(store.is_loaded(name, &loaded));
        assert!(!store.is_loaded("docker.io/library/other:latest", &loaded));
        // A pull moves the name to another image: that one is not loaded, and the next mark
        // drops the stale entry.
        let pulled = add_image(&store, b"{\"a\":2}", &[name]);
        assert!(!store.is_loaded(name, &pulled));
        store.mark_loaded(&[]).unwrap();
        assert!(store.read_marks().unwrap().names.is_empty());
    }
}
