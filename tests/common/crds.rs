//! CustomResourceDefinitions more than one test file installs, and installing one.

use super::{ApiServer, text};

/// `kubectl apply` of `manifest` (a definition) and a wait until the definition `name` is
/// Established; returns what apply printed.
pub fn install(server: &ApiServer, manifest: &str, name: &str) -> String {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "apply of {name}: {}", text(&out));
    server.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{name}"),
        "--timeout=30s",
    ]);
    text(&out)
}

/// An operator's Crew: namespaced, with a status subresource and a scale subresource whose
/// selector is the one its status publishes (what `kubectl scale` and autoscalers use).
pub const CREWS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crews.example.org
spec:
  group: example.org
  scope: Namespaced
  names: {plural: crews, singular: crew, kind: Crew}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
"#;
