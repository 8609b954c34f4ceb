//! Writing a cluster's credentials into the user's kubeconfig, the way kind does: one cluster,
//! one user and one context, all with the same name, merged into whatever the file already
//! holds without disturbing anything else in it.

// The CLI (`create`, `delete`, `get kubeconfig`) calls these; until it is merged only tests do.
#![allow(dead_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use serde_yaml::{Mapping, Value};

/// What kcluster puts into a kubeconfig for one cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct KubeconfigEntry {
    /// "kcluster-<name>"; the cluster and user entries use the same name.
    pub context: String,
    /// "https://127.0.0.1:PORT"
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl fmt::Debug for KubeconfigEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client key is a cluster-admin credential: keep it out of logs.
        f.debug_struct("KubeconfigEntry")
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The three kubeconfig lists an entry lives in: (list key, key of the payload in each item).
const SECTIONS: [(&str, &str); 3] = [
    ("clusters", "cluster"),
    ("users", "user"),
    ("contexts", "context"),
];

/// client-go gives up on a held lock after about this long too.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// A standalone kubeconfig (YAML text) holding just this entry, current-context set (for
/// `kcluster get kubeconfig`).
pub fn render(entry: &KubeconfigEntry) -> Result<String> {
    let mut config = empty_config();
    apply(&mut config, entry, true, Path::new("<new kubeconfig>"))?;
    to_yaml(&config).context("encoding the kubeconfig as YAML")
}

/// The file to write: first path of $KUBECONFIG (split by ':'), else ~/.kube/config. Takes the
/// env value explicitly for testability.
pub fn default_path(kubeconfig_env: Option<&str>, home: Option<&Path>) -> Result<PathBuf> {
    // kubectl treats an empty variable, and empty list items, as absent.
    if let Some(first) = kubeconfig_env
        .into_iter()
        .flat_map(|list| list.split(':'))
        .find(|item| !item.is_empty())
    {
        return Ok(PathBuf::from(first));
    }
    match home {
        Some(home) if !home.as_os_str().is_empty() => Ok(home.join(".kube").join("config")),
        _ => bail!(
            "cannot tell where your kubeconfig is: neither $KUBECONFIG nor $HOME is set; \
             set one of them, or pass --kubeconfig"
        ),
    }
}

/// Merge entry into the file (created with parent dir, mode 0600, if missing): replace the
/// cluster/user/context with the same name, keep every other entry and unknown field intact,
/// set current-context when `switch_context`.
pub fn merge(path: &Path, entry: &KubeconfigEntry, switch_context: bool) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The directory holds credentials, so only its owner gets in.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating the directory {}", parent.display()))?;
    }
    let _lock = FileLock::acquire(path)?;
    let mut config = read(path)?.unwrap_or_else(empty_config);
    apply(&mut config, entry, switch_context, path)?;
    write_atomically(path, &config)
}

/// Remove exactly the cluster/user/context named `context`; if it was current-context, unset
/// current-context (set it to ""); leave everything else. A missing file or entry is fine, so
/// `kcluster delete` can be repeated.
pub fn remove(path: &Path, context: &str) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let _lock = FileLock::acquire(path)?;
    let Some(mut config) = read(path)? else {
        return Ok(());
    };
    let mut changed = false;
    for (list_key, _) in SECTIONS {
        if let Some(items) = named_list(&mut config, list_key, path)? {
            let before = items.len();
            items.retain(|item| item_name(item) != Some(context));
            changed |= items.len() != before;
        }
    }
    let current = Value::from("current-context");
    if config.get(&current).and_then(Value::as_str) == Some(context) {
        // kubectl reads "" as "no current context", the same as kind leaves it.
        config.insert(current, Value::from(""));
        changed = true;
    }
    if !changed {
        // Nothing of ours was there: leave the file byte-for-byte as the user wrote it.
        return Ok(());
    }
    write_atomically(path, &config)
}

fn empty_config() -> Mapping {
    let mut config = Mapping::new();
    config.insert("apiVersion".into(), "v1".into());
    config.insert("kind".into(), "Config".into());
    config.insert("preferences".into(), Value::Mapping(Mapping::new()));
    config
}

/// Puts `entry` into `config`, replacing same-named items in place so the order of the lists
/// (and so of `kubectl config get-contexts`) stays stable across re-creates.
fn apply(
    config: &mut Mapping,
    entry: &KubeconfigEntry,
    switch_context: bool,
    path: &Path,
) -> Result<()> {
    ensure!(
        !entry.context.is_empty(),
        "a kubeconfig entry needs a context name"
    );
    ensure!(
        !entry.server.is_empty(),
        "the kubeconfig entry \"{}\" needs a server URL",
        entry.context
    );
    for key in ["apiVersion", "kind"] {
        if !config.contains_key(key) {
            let default = if key == "kind" { "Config" } else { "v1" };
            config.insert(key.into(), default.into());
        }
    }
    let name = entry.context.as_str();
    for (list_key, item_key) in SECTIONS {
        let payload = match item_key {
            "cluster" => mapping([
                ("certificate-authority-data", base64_of(&entry.ca_pem)),
                ("server", entry.server.clone().into()),
            ]),
            "user" => mapping([
                ("client-certificate-data", base64_of(&entry.client_cert_pem)),
                ("client-key-data", base64_of(&entry.client_key_pem)),
            ]),
            _ => mapping([("cluster", name.into()), ("user", name.into())]),
        };
        let item = mapping([("name", name.into()), (item_key, payload)]);
        if named_list(config, list_key, path)?.is_none() {
            config.insert(list_key.into(), Value::Sequence(Vec::new()));
        }
        let Some(items) = named_list(config, list_key, path)? else {
            bail!("internal error: {list_key} vanished from the kubeconfig");
        };
        match items.iter_mut().find(|i| item_name(i) == Some(name)) {
            Some(existing) => *existing = item,
            None => items.push(item),
        }
    }
    if switch_context {
        config.insert("current-context".into(), name.into());
    }
    Ok(())
}

/// The list under `key`, or None when the key is absent or null. Anything else in that place is
/// an error: rewriting it would throw away what the user has there.
fn named_list<'a>(
    config: &'a mut Mapping,
    key: &str,
    path: &Path,
) -> Result<Option<&'a mut Vec<Value>>> {
    match config.get_mut(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Sequence(items)) => Ok(Some(items)),
        Some(_) => bail!(
            "{}: \"{key}\" is not a list; the file was left unchanged, fix it and retry",
            path.display()
        ),
    }
}

fn item_name(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

fn mapping<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

fn base64_of(pem: &str) -> Value {
    base64::engine::general_purpose::STANDARD
        .encode(pem.as_bytes())
        .into()
}

/// The parsed file, None when it does not exist or holds no document. kubectl treats an empty
/// file as an empty config, and so do we.
fn read(path: &Path) -> Result<Option<Mapping>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let value: Value = serde_yaml::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid kubeconfig (YAML error); it was left unchanged: fix it, move it \
             away, or point $KUBECONFIG at another file",
            path.display()
        )
    })?;
    match value {
        Value::Null => Ok(None),
        Value::Mapping(config) => Ok(Some(config)),
        _ => bail!(
            "{} is not a kubeconfig (its top level is not a mapping); it was left unchanged: \
             fix it, move it away, or point $KUBECONFIG at another file",
            path.display()
        ),
    }
}

/// Replaces `path` with `config` so that readers, and a crash at any moment, see either the old
/// file or the new one, never a half-written mix.
fn write_atomically(path: &Path, config: &Mapping) -> Result<()> {
    let text = to_yaml(config).with_context(|| {
        format!(
            "{} cannot be written back faithfully; it was left unchanged",
            path.display()
        )
    })?;
    // Follow a symlinked kubeconfig (dotfile managers do this) to write its target: a rename
    // onto the link itself would replace the link with a plain file.
    let target = match fs::canonicalize(path) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e).with_context(|| format!("resolving {}", path.display())),
    };
    // Keep the mode the user gave an existing file; a new one holds credentials, so 0600.
    let mode = match fs::metadata(&target) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o600,
    };
    let temp = temp_path_beside(&target);
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e).with_context(|| {
            format!(
                "writing {} (through {}); the original file was left unchanged",
                target.display(),
                temp.display()
            )
        });
    }
    // Make the rename itself durable. Not every filesystem lets a directory be synced, and the
    // new file is in place either way, so a failure here is not worth failing the command.
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn temp_path_beside(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kubeconfig".to_owned());
    let unique = format!(
        ".{file_name}.kcluster-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    target.with_file_name(unique)
}

/// Block-style YAML that kubectl reads back exactly as we mean it.
///
/// kubectl parses kubeconfig files as YAML 1.1, where `no`, `on`, `y` and `1_000` are not
/// strings. serde_yaml writes YAML 1.2 and leaves such strings unquoted, so a user's quoted
/// `namespace: "no"` would come back as a boolean and kubectl would refuse the whole file.
/// This writer quotes every string that is not plainly a string in both YAML versions.
fn to_yaml(config: &Mapping) -> Result<String> {
    let mut out = String::new();
    if config.is_empty() {
        out.push_str("{}\n");
    } else {
        write_mapping(&mut out, config, 0, false)?;
    }
    Ok(out)
}

/// Writes `map` at `indent`. With `continues_line`, the first key goes right after a `- `
/// already written, as in `- name: x`.
fn write_mapping(
    out: &mut String,
    map: &Mapping,
    indent: usize,
    continues_line: bool,
) -> Result<()> {
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 || !continues_line {
            push_indent(out, indent);
        }
        match key {
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
                write_scalar(out, key)?;
            }
            _ => {
                bail!("a mapping key is itself a list or mapping, which kubeconfig files never use")
            }
        }
        out.push(':');
        // Lists start at their key's column, as kubectl writes them.
        write_nested(out, value, indent + 2, indent)?;
    }
    Ok(())
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) -> Result<()> {
    for item in items {
        push_indent(out, indent);
        out.push('-');
        match item {
            Value::Mapping(map) if !map.is_empty() => {
                out.push(' ');
                write_mapping(out, map, indent + 2, true)?;
            }
            // A list inside a list gets its own lines, indented past this item's dash.
            _ => write_nested(out, item, indent + 2, indent + 2)?,
        }
    }
    Ok(())
}

/// Writes what follows a `key:` or `-`: a scalar on the same line, or a block on the next ones,
/// at `map_indent` or `list_indent`.
fn write_nested(
    out: &mut String,
    value: &Value,
    map_indent: usize,
    list_indent: usize,
) -> Result<()> {
    match value {
        Value::Mapping(map) if !map.is_empty() => {
            out.push('\n');
            write_mapping(out, map, map_indent, false)
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, items, list_indent)
        }
        _ => {
            out.push(' ');
            write_scalar(out, value)?;
            out.push('\n');
            Ok(())
        }
    }
}

fn write_scalar(out: &mut String, value: &Value) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) if is_plain_safe(s) => out.push_str(s),
        Value::String(s) => push_double_quoted(out, s),
        Value::Mapping(map) if map.is_empty() => out.push_str("{}"),
        Value::Sequence(items) if items.is_empty() => out.push_str("[]"),
        Value::Tagged(tagged) => bail!(
            "it uses the YAML tag {}, which kubectl does not understand and kcluster cannot keep",
            tagged.tag
        ),
        Value::Mapping(_) | Value::Sequence(_) => {
            bail!("internal error: a non-empty collection reached the scalar writer")
        }
    }
    Ok(())
}

/// True when `s` can be written unquoted and still reads back as this string under YAML 1.1
/// and 1.2. Deliberately narrow: quoting something needlessly costs nothing.
fn is_plain_safe(s: &str) -> bool {
    const SPECIAL_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    // Numbers, dates, `.inf`, `-`/`?`/`@` indicators and the like all start with something else.
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@:+=-".contains(c))
        // A trailing colon would read as a mapping key.
        && !s.ends_with(':')
        && !SPECIAL_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

fn push_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // YAML forbids raw control characters even inside quotes.
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// `<path>.lock`, created exclusively, the same protocol client-go (kubectl) uses, so kcluster
/// and kubectl never interleave their read-modify-write of one kubeconfig.
struct FileLock {
    path: PathBuf,
}

impl FileLock {
    fn acquire(kubeconfig: &Path) -> Result<Self> {
        let mut name = kubeconfig.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if Instant::now() >= deadline {
                        bail!(
                            "{} is locked by another program (kubectl, kind, kcluster…) and \
                             stayed locked for {}s; if none is running, the lock is stale: \
                             delete {} and retry",
                            kubeconfig.display(),
                            LOCK_TIMEOUT.as_secs(),
                            path.display()
                        );
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating the lock {}", path.display()));
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(
                "could not remove the kubeconfig lock {}: {e}; delete it by hand or kubectl \
                 will wait on it",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn entry(name: &str, port: u16) -> KubeconfigEntry {
        KubeconfigEntry {
            context: format!("kcluster-{name}"),
            server: format!("https://127.0.0.1:{port}"),
            ca_pem: format!("-----BEGIN CERTIFICATE-----\nca-{name}\n-----END CERTIFICATE-----\n"),
            client_cert_pem: format!("cert-{name}"),
            client_key_pem: format!("key-{name}"),
        }
    }

    /// A kubeconfig as other tools leave it: two foreign contexts, one of them current, and
    /// fields kcluster knows nothing about, at the top level and inside items.
    const FOREIGN: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: kind-other
  cluster:
    server: https://127.0.0.1:40000
    certificate-authority-data: b3RoZXI=
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: other}
- name: prod
  cluster:
    server: https://prod.example.com
    insecure-skip-tls-verify: true
users:
- name: kind-other
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: prod
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
      args: [eks, get-token]
contexts:
- name: kind-other
  context: {cluster: kind-other, user: kind-other}
- name: prod
  context: {cluster: prod, user: prod, namespace: payments}
current-context: prod
preferences:
  colors: true
extensions:
- name: my-tool
  extension: {answer: 42, nested: [1, 2, {deep: true}]}
"#;

    fn load(path: &Path) -> Result<Mapping> {
        Ok(serde_yaml::from_str(&fs::read_to_string(path)?)?)
    }

    fn names(config: &Mapping, list: &str) -> Vec<String> {
        config
            .get(list)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|item| item_name(item).map(str::to_owned))
            .collect()
    }

    fn find<'a>(config: &'a Mapping, list: &str, name: &str) -> Option<&'a Value> {
        config
            .get(list)?
            .as_sequence()?
            .iter()
            .find(|item| item_name(item) == Some(name))
    }

    fn current(config: &Mapping) -> Option<&str> {
        config.get("current-context").and_then(Value::as_str)
    }

    /// Everything in `config` except kcluster's own entries and current-context.
    fn foreign_part(config: &Mapping, ours: &str) -> Mapping {
        let mut rest = config.clone();
        rest.remove("current-context");
        for (list, _) in SECTIONS {
            if let Some(Value::Sequence(items)) = rest.get_mut(list) {
                items.retain(|item| item_name(item) != Some(ours));
            }
        }
        rest
    }

    fn decode(value: Option<&Value>) -> Result<String> {
        let text = value.and_then(Value::as_str).context("field missing")?;
        Ok(String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(text)?,
        )?)
    }

    #[test]
    fn merge_creates_a_missing_file_and_its_directory() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("nested/.kube/config");
        let e = entry("dev", 6443);
        merge(&path, &e, true)?;

        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let config = load(&path)?;
        assert_eq!(config.get("apiVersion"), Some(&Value::from("v1")));
        assert_eq!(config.get("kind"), Some(&Value::from("Config")));
        assert_eq!(current(&config), Some("kcluster-dev"));
        let cluster = find(&config, "clusters", "kcluster-dev").context("no cluster")?;
        assert_eq!(
            cluster["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        assert_eq!(
            decode(cluster["cluster"].get("certificate-authority-data"))?,
            e.ca_pem
        );
        let user = find(&config, "users", "kcluster-dev").context("no user")?;
        assert_eq!(
            decode(user["user"].get("client-certificate-data"))?,
            e.client_cert_pem
        );
        assert_eq!(
            decode(user["user"].get("client-key-data"))?,
            e.client_key_pem
        );
        let context = find(&config, "contexts", "kcluster-dev").context("no context")?;
        assert_eq!(context["context"]["cluster"].as_str(), Some("kcluster-dev"));
        assert_eq!(context["context"]["user"].as_str(), Some("kcluster-dev"));

        // No lock or temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("nested/.kube"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(leftovers, ["config"]);
        Ok(())
    }

    #[test]
    fn merge_keeps_every_foreign_entry_and_field() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, FOREIGN)?;
        let original: Mapping = serde_yaml::from_str(FOREIGN)?;

        merge(&path, &entry("dev", 6443), true)?;
        let merged = load(&path)?;
        assert_eq!(
            foreign_part(&merged, "kcluster-dev"),
            foreign_part(&original, "-")
        );
        assert_eq!(
            names(&merged, "contexts"),
            ["kind-other", "prod", "kcluster-dev"]
        );
        assert_eq!(current(&merged), Some("kcluster-dev"));
        Ok(())
    }

    #[test]
    fn remerge_replaces_in_place_without_duplicates() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, FOREIGN)?;
        merge(&path, &entry("dev", 6443), true)?;
        merge(&path, &entry("second", 7000), false)?;
        merge(&path, &entry("dev", 6555), true)?;

        let config = load(&path)?;
        for list in ["clusters", "users", "contexts"] {
            assert_eq!(
                names(&config, list),
                ["kind-other", "prod", "kcluster-dev", "kcluster-second"],
                "{list}"
            );
        }
        let cluster = find(&config, "clusters", "kcluster-dev").context("no cluster")?;
        assert_eq!(
            cluster["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6555")
        );
        Ok(())
    }

    #[test]
    fn remove_restores_the_original_entries() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, FOREIGN)?;
        let original: Mapping = serde_yaml::from_str(FOREIGN)?;

        merge(&path, &entry("dev", 6443), false)?;
        remove(&path, "kcluster-dev")?;
        assert_eq!(load(&path)?, original);

        // Idempotent: a second remove, a missing entry and a missing file are all fine.
        let before = fs::read(&path)?;
        remove(&path, "kcluster-dev")?;
        remove(&path, "kcluster-never-existed")?;
        assert_eq!(fs::read(&path)?, before, "a no-op remove rewrote the file");
        remove(&dir.path().join("absent"), "kcluster-dev")?;
        assert!(!dir.path().join("absent").exists());
        Ok(())
    }

    #[test]
    fn removing_the_current_context_unsets_it() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, FOREIGN)?;
        merge(&path, &entry("dev", 6443), true)?;
        remove(&path, "kcluster-dev")?;

        let config = load(&path)?;
        assert_eq!(current(&config), Some(""));
        assert_eq!(names(&config, "contexts"), ["kind-other", "prod"]);
        assert_eq!(names(&config, "clusters"), ["kind-other", "prod"]);
        assert_eq!(names(&config, "users"), ["kind-other", "prod"]);
        Ok(())
    }

    #[test]
    fn no_switch_context_keeps_the_current_context() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, FOREIGN)?;
        merge(&path, &entry("dev", 6443), false)?;
        let config = load(&path)?;
        assert_eq!(current(&config), Some("prod"));
        assert!(find(&config, "contexts", "kcluster-dev").is_some());

        // Removing a context that is not current leaves current-context alone as well.
        remove(&path, "kcluster-dev")?;
        assert_eq!(current(&load(&path)?), Some("prod"));
        Ok(())
    }

    #[test]
    fn malformed_file_is_an_error_and_untouched() -> Result<()> {
        let dir = TempDir::new()?;
        for (i, text) in [
            "clusters: [unclosed\n",
            "- just\n- a list\n",
            "clusters: not-a-list\n",
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("config-{i}"));
            fs::write(&path, text)?;
            let err = merge(&path, &entry("dev", 6443), true)
                .err()
                .context("merge accepted a malformed file")?;
            let message = format!("{err:#}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("left unchanged"), "{message}");
            assert_eq!(fs::read_to_string(&path)?, text);
            assert!(remove(&path, "kcluster-dev").is_err());
            assert_eq!(fs::read_to_string(&path)?, text);
            // The lock is released on the error path too.
            assert!(!dir.path().join(format!("config-{i}.lock")).exists());
        }
        Ok(())
    }

    #[test]
    fn an_empty_file_is_an_empty_config() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        fs::write(&path, "")?;
        merge(&path, &entry("dev", 6443), true)?;
        assert_eq!(names(&load(&path)?, "contexts"), ["kcluster-dev"]);
        Ok(())
    }

    #[test]
    fn merge_waits_for_the_lock_and_then_proceeds() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        let lock = dir.path().join("config.lock");
        fs::write(&lock, "")?;
        let releaser = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                fs::remove_file(lock)
            })
        };
        let started = Instant::now();
        merge(&path, &entry("dev", 6443), true)?;
        assert!(started.elapsed() >= Duration::from_millis(300));
        releaser
            .join()
            .map_err(|_| anyhow::anyhow!("releaser thread panicked"))??;
        assert!(!lock.exists());
        assert_eq!(names(&load(&path)?, "contexts"), ["kcluster-dev"]);
        Ok(())
    }

    #[test]
    fn concurrent_merges_lose_no_entry() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        let workers: Vec<_> = (0..8u16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || merge(&path, &entry(&format!("c{i}"), 7000 + i), true))
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("merge thread panicked"))??;
        }
        let mut contexts = names(&load(&path)?, "contexts");
        contexts.sort();
        let expected: Vec<String> = (0..8).map(|i| format!("kcluster-c{i}")).collect();
        assert_eq!(contexts, expected);
        Ok(())
    }

    #[test]
    fn merge_writes_through_a_symlink() -> Result<()> {
        let dir = TempDir::new()?;
        let real = dir.path().join("dotfiles-kubeconfig");
        fs::write(&real, FOREIGN)?;
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link)?;
        merge(&link, &entry("dev", 6443), true)?;
        assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert!(find(&load(&real)?, "contexts", "kcluster-dev").is_some());
        Ok(())
    }

    #[test]
    fn render_is_a_standalone_kubeconfig() -> Result<()> {
        let e = entry("dev", 6443);
        let config: Mapping = serde_yaml::from_str(&render(&e)?)?;
        assert_eq!(current(&config), Some("kcluster-dev"));
        for list in ["clusters", "users", "contexts"] {
            assert_eq!(names(&config, list), ["kcluster-dev"], "{list}");
        }
        let user = find(&config, "users", "kcluster-dev").context("no user")?;
        assert_eq!(
            decode(user["user"].get("client-key-data"))?,
            e.client_key_pem
        );
        assert!(!format!("{e:?}").contains("key-dev"));
        Ok(())
    }

    /// Strings that YAML 1.1 (kubectl) or YAML 1.2 would read as something else, or that need
    /// escaping, must all survive a rewrite.
    const TRICKY: &str = r##"
strings: ["no", "on", "off", "y", "N", "Yes", "true", "null", "~", "", "1_000", "0b101",
  "0777", "0x1f", "1:30", "2001-12-14", ".inf", "-dash", "@at", "#hash", "a: b", "trailing:",
  " padded ", "multi\nline", "tab\there", "quote\"back\\slash", "\x7f\x01", "bücher",
  "https://127.0.0.1:6443", "system:node:dev", "kcluster-dev"]
numbers: [1, -2, 1.5, 1e3]
flags: [true, false, null]
nested: [[a, [b]], {}, [], {k: v, l: [1]}]
empty-map: {}
empty-list: []
7: numeric key
"yes": quoted key
deep: {a: {b: {c: [{d: e, f: [g]}]}}}
"##;

    #[test]
    fn writer_round_trips_what_yaml_1_1_would_misread() -> Result<()> {
        let original: Mapping = serde_yaml::from_str(TRICKY)?;
        let text = to_yaml(&original)?;
        let reread: Mapping = serde_yaml::from_str(&text)?;
        assert_eq!(reread, original, "{text}");
        for quoted in [
            r#""no""#,
            r#""on""#,
            r#""y""#,
            r#""1_000""#,
            r#""1:30""#,
            r#""yes":"#,
        ] {
            assert!(text.contains(quoted), "{quoted} is not quoted in:\n{text}");
        }
        assert!(text.contains("- https://127.0.0.1:6443\n"), "{text}");
        Ok(())
    }

    #[test]
    fn writer_refuses_yaml_tags_instead_of_dropping_them() -> Result<()> {
        let dir = TempDir::new()?;
        let path = dir.path().join("config");
        let text = "apiVersion: v1\nkind: Config\nextensions: !custom {a: 1}\n";
        fs::write(&path, text)?;
        let err = merge(&path, &entry("dev", 6443), true)
            .err()
            .context("merge accepted a tagged value")?;
        assert!(format!("{err:#}").contains("!custom"), "{err:#}");
        assert!(format!("{err:#}").contains("left unchanged"), "{err:#}");
        assert_eq!(fs::read_to_string(&path)?, text);
        Ok(())
    }

    #[test]
    fn default_path_prefers_the_first_kubeconfig_entry() -> Result<()> {
        let home = Path::new("/home/u");
        assert_eq!(default_path(Some("a:b"), Some(home))?, PathBuf::from("a"));
        assert_eq!(default_path(Some(":b"), Some(home))?, PathBuf::from("b"));
        assert_eq!(
            default_path(Some("/x/config"), None)?,
            PathBuf::from("/x/config")
        );
        let fallback = PathBuf::from("/home/u/.kube/config");
        assert_eq!(default_path(None, Some(home))?, fallback);
        assert_eq!(default_path(Some(""), Some(home))?, fallback);
        assert!(default_path(None, None).is_err());
        Ok(())
    }
}
