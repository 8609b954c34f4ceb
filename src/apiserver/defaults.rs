//! Kubernetes' defaulting, as a create or update sees it: what `kubectl get -o yaml` shows that
//! the client never sent. The per-kind rules live in `kinds`; this is their entry point.

use serde_json::Value;

use super::kinds;
use super::resources::ResourceDef;

/// A new object: the kind's defaults, then what its create strategy sets (fresh status,
/// generated selectors), then the defaults again, since Kubernetes also defaults what it reads
/// back from storage (a Job's labels come from its generated template labels that way).
pub fn on_create(def: &ResourceDef, obj: &mut Value) {
    kinds::default(def, obj);
    kinds::prepare_create(def, obj);
    kinds::default(def, obj);
}

/// An incoming update, decoded as Kubernetes decodes it: with defaults filled in.
pub fn on_update(def: &ResourceDef, obj: &mut Value) {
    kinds::default(def, obj);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_are_active_with_their_name_label() {
        let def = super::super::resources::find("", "v1", "namespaces").unwrap();
        let mut ns = json!({"metadata": {"name": "dev"}});
        on_create(def, &mut ns);
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "dev"
        );
        assert_eq!(ns["spec"]["finalizers"][0], "kubernetes");
    }

    #[test]
    fn jobs_get_labels_from_their_generated_template_labels() {
        let def = super::super::resources::find("batch", "v1", "jobs").unwrap();
        let mut job = json!({"metadata": {"name": "pi", "uid": "abc"}, "spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}});
        on_create(def, &mut job);
        assert_eq!(job["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(
            job["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            "abc"
        );
        assert_eq!(job["status"], json!({}));
    }
}
