//! The LimitRanger admission plugin: a namespace's LimitRanges give containers their default
//! requests and limits (recorded in the `kubernetes.io/limit-ranger` annotation) and bound what
//! containers, whole pods and claims may ask for, in Kubernetes' words.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::json::obj;
use super::quantity::Quantity;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn list(v: Option<&Value>) -> BTreeMap<String, Value> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn items<'a>(ranges: &'a [Value], type_: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .filter_map(|lr| lr.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(move |item| item.get("type").and_then(Value::as_str) == Some(type_))
}

/// Fills in missing container requests and limits from the Container items' defaultRequest
/// and default.
pub fn default_pod(ranges: &[Value], pod: &mut Value) {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for item in items(ranges, "Container") {
        for (k, v) in list(item.get("defaultRequest")) {
            requests.entry(k).or_insert(v);
        }
        for (k, v) in list(item.get("default")) {
            limits.entry(k).or_insert(v);
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    let spec = obj(pod, "spec");
    for (field, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let resources = obj(c, "resources");
            for (list_name, defaults, word) in [
                ("requests", &requests, "request"),
                ("limits", &limits, "limit"),
            ] {
                let target = obj(resources, list_name);
                let mut set = Vec::new();
                for (k, v) in defaults {
                    if target.get(k).is_none() {
                        target[k] = v.clone();
                        set.push(k.clone());
                    }
                }
                if !set.is_empty() {
                    notes.push(format!("{} {word} for {what} {name}", set.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let annotations = obj(obj(pod, "metadata"), "annotations");
        annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

fn quantity(list: &BTreeMap<String, Value>, key: &str) -> Option<Quantity> {
    list.get(key).and_then(Quantity::from_json)
}

/// min, max and maxLimitRequestRatio of one item against requests and limits; Kubernetes'
/// messages.
fn check(
    item: &Value,
    kind: &str,
    requests: &BTreeMap<String, Value>,
    limits: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    for (resource, enforced) in list(item.get("min")) {
        let Some(enforced) = Quantity::from_json(&enforced) else {
            continue;
        };
        let min = enforced.canonical();
        match quantity(requests, &resource) {
            None => errors.push(format!(
                "minimum {resource} usage per {kind} is {min}.  No request is specified"
            )),
            Some(req) if req.cmp_value(&enforced).is_lt() => errors.push(format!(
                "minimum {resource} usage per {kind} is {min}, but request is {}",
                req.canonical()
            )),
            Some(_) => {
                if let Some(lim) = quantity(limits, &resource)
                    && lim.cmp_value(&enforced).is_lt()
                {
                    errors.push(format!(
                        "minimum {resource} usage per {kind} is {min}, but limit is {}",
                        lim.canonical()
                    ));
                }
            }
        }
    }
    for (resource, enforced) in list(item.get("max")) {
        let Some(enforced) = Quantity::from_json(&enforced) else {
            continue;
        };
        let max = enforced.canonical();
        match quantity(limits, &resource) {
            None => errors.push(format!(
                "maximum {resource} usage per {kind} is {max}.  No limit is specified"
            )),
            Some(lim) if lim.cmp_value(&enforced).is_gt() => errors.push(format!(
                "maximum {resource} usage per {kind} is {max}, but limit is {}",
                lim.canonical()
            )),
            Some(_) => {
                if let Some(req) = quantity(requests, &resource)
                    && req.cmp_value(&enforced).is_gt()
                {
                    errors.push(format!(
                        "maximum {resource} usage per {kind} is {max}, but request is {}",
                        req.canonical()
                    ));
                }
            }
        }
    }
    for (resource, enforced) in list(item.get("maxLimitRequestRatio")) {
        let Some(enforced) = Quantity::from_json(&enforced) else {
            continue;
        };
        let ratio = enforced.canonical();
        let req = quantity(requests, &resource)
            .map(|q| q.milli_value())
            .unwrap_or(0);
        let lim = quantity(limits, &resource)
            .map(|q| q.milli_value())
            .unwrap_or(0);
        if req == 0 {
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            ));
        } else if lim == 0 {
            errors.push(format!(
                "{resource} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            ));
        } else {
            let observed = lim as f64 / req as f64;
            if observed * 1000.0 > enforced.milli_value() as f64 {
                errors.push(format!(
                    "{resource} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
                ));
            }
        }
    }
}

fn container_lists(c: &Value) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    (
        list(c.pointer("/resources/requests")),
        list(c.pointer("/resources/limits")),
    )
}

/// Sums a list over containers, keeping every resource any container names.
fn sum(lists: &[BTreeMap<String, Value>]) -> BTreeMap<String, Value> {
    let mut total: BTreeMap<String, Quantity> = BTreeMap::new();
    for l in lists {
        for (k, v) in l {
            if let Some(q) = Quantity::from_json(v) {
                let entry = total.entry(k.clone()).or_insert(Quantity::int(0));
                *entry = entry.add(&q);
            }
        }
    }
    total
        .into_iter()
        .map(|(k, q)| (k, json!(q.canonical())))
        .collect()
}

/// The violations of a (defaulted) pod; empty when it is within every range.
pub fn validate_pod(ranges: &[Value], pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    for item in items(ranges, "Container") {
        for c in &containers {
            let (req, lim) = container_lists(c);
            check(item, "Container", &req, &lim, &mut errors);
        }
    }
    for item in items(ranges, "Pod") {
        let (reqs, lims): (Vec<_>, Vec<_>) = containers.iter().map(|c| container_lists(c)).unzip();
        check(item, "Pod", &sum(&reqs), &sum(&lims), &mut errors);
    }
    errors
}

/// The violations of a claim's storage request.
pub fn validate_claim(ranges: &[Value], claim: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let requests = list(claim.pointer("/spec/resources/requests"));
    let limits = list(claim.pointer("/spec/resources/limits"));
    for item in items(ranges, "PersistentVolumeClaim") {
        check(
            item,
            "PersistentVolumeClaim",
            &requests,
            &limits,
            &mut errors,
        );
    }
    errors
}

/// utilerrors.NewAggregate's text: one message alone, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<Value> {
        vec![json!({"spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": "500m", "memory": "512Mi"},
            "defaultRequest": {"cpu": "100m"},
            "min": {"cpu": "50m"},
            "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "10"},
        }]}})]
    }

    #[test]
    fn containers_get_defaults_and_an_annotation() {
        let mut pod = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "1Gi"}}}]}});
        default_pod(&ranges(), &mut pod);
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"]["cpu"], "500m");
        assert_eq!(r["limits"]["memory"], "1Gi");
        assert_eq!(r["requests"]["cpu"], "100m");
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container app; cpu limit for container app"
        );
        assert!(validate_pod(&ranges(), &pod).is_empty());
    }

    #[test]
    fn violations_use_kubernetes_words() {
        let pod = json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": "10m"}, "limits": {"cpu": "2"}}}]}});
        let errors = validate_pod(&ranges(), &pod);
        assert_eq!(
            errors,
            [
                "minimum cpu usage per Container is 50m, but request is 10m",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 10, but provided ratio is 200.000000",
            ]
        );
        assert!(aggregate(&errors).starts_with("[minimum"));
    }
}
