use super::*;

async fn put(store: &Store, plural: &str, ns: Option<&str>, obj: Value) {
    let def = resources::find("", "v1", plural).unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    store
        .create(
            &def.key(ns, &name),
            serde_json::to_vec(&obj).unwrap().into(),
        )
        .await
        .unwrap();
}

fn signer(dir: &std::path::Path) -> Signer {
    Signer::from_pem(&jwt::load_or_create_key(&dir.join("sa.key")).unwrap()).unwrap()
}

#[tokio::test]
async fn issued_tokens_authenticate_while_what_they_name_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let signer = signer(tmp.path());
    let err = token_request(&store, &signer, "ns1", "robot", &json!({})).unwrap_err();
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "serviceaccounts \"robot\" not found");

    put(
        &store,
        "serviceaccounts",
        Some("ns1"),
        json!({"metadata": {"name": "robot", "namespace": "ns1", "uid": "sa-uid"}}),
    )
    .await;
    put(
        &store,
        "pods",
        Some("ns1"),
        json!({"metadata": {"name": "p", "namespace": "ns1", "uid": "pod-uid"}, "spec": {}}),
    )
    .await;

    let plain = token_request(&store, &signer, "ns1", "robot", &json!({"spec": {}})).unwrap();
    assert_eq!(plain["kind"], "TokenRequest");
    assert_eq!(plain["spec"]["expirationSeconds"], 3600);
    assert_eq!(plain["spec"]["audiences"], json!([jwt::ISSUER]));
    let token = plain["status"]["token"].as_str().unwrap();
    let who = authenticate(&store, &signer, token).unwrap();
    assert_eq!(who.user, "system:serviceaccount:ns1:robot");
    assert_eq!(
        who.groups,
        vec![
            "system:serviceaccounts",
            "system:serviceaccounts:ns1",
            "system:authenticated"
        ]
    );

    let bound = token_request(
        &store,
        &signer,
        "ns1",
        "robot",
        &json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}}),
    )
    .unwrap();
    let bound_token = bound["status"]["token"].as_str().unwrap();
    assert!(authenticate(&store, &signer, bound_token).is_ok());

    // The pod goes: its token stops working; the plain one does not care.
    let pods = resources::find("", "v1", "pods").unwrap();
    store
        .delete(&pods.key(Some("ns1"), "p"), None)
        .await
        .unwrap();
    assert!(authenticate(&store, &signer, bound_token).is_err());
    assert!(authenticate(&store, &signer, token).is_ok());
    // A recreated account has a new uid: old tokens die.
    let sas = resources::find("", "v1", "serviceaccounts").unwrap();
    store
        .delete(&sas.key(Some("ns1"), "robot"), None)
        .await
        .unwrap();
    put(
        &store,
        "serviceaccounts",
        Some("ns1"),
        json!({"metadata": {"name": "robot", "namespace": "ns1", "uid": "sa-uid-2"}}),
    )
    .await;
    assert!(authenticate(&store, &signer, token).is_err());
    assert!(authenticate(&store, &signer, "bogus").is_err());
}

#[tokio::test]
async fn token_requests_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let signer = signer(tmp.path());
    put(
        &store,
        "serviceaccounts",
        Some("d"),
        json!({"metadata": {"name": "default", "namespace": "d", "uid": "u"}}),
    )
    .await;
    let short = token_request(
        &store,
        &signer,
        "d",
        "default",
        &json!({"spec": {"expirationSeconds": 60}}),
    )
    .unwrap_err();
    assert_eq!(short.code, 422);
    assert!(
        short
            .message
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        short.message
    );
    let missing = token_request(
        &store,
        &signer,
        "d",
        "default",
        &json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "nope"}}}),
    )
    .unwrap_err();
    assert_eq!(missing.code, 404);
    let kind = token_request(
        &store,
        &signer,
        "d",
        "default",
        &json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "name": "x"}}}),
    )
    .unwrap_err();
    assert_eq!(kind.code, 400);
}

#[tokio::test]
async fn pods_get_the_api_access_volume_unless_they_opt_out() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let mut pod = json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"serviceAccountName": "default",
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "c", "image": "x"},
                {"name": "own", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}],
            "volumes": [{"name": "mine", "emptyDir": {}}]}});
    mount_api_access(&store, &mut pod).unwrap();
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    let name = volumes[1]["name"].as_str().unwrap();
    assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5);
    assert_eq!(
        volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    assert_eq!(
        pod["spec"]["initContainers"][0]["volumeMounts"],
        json!([mount])
    );
    assert_eq!(pod["spec"]["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(
        pod["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let mut opted_out = json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "x"}]}});
    let before = opted_out.clone();
    mount_api_access(&store, &mut opted_out).unwrap();
    assert_eq!(opted_out, before);

    // The account may opt out for its pods.
    put(&store, "serviceaccounts", Some("d"),
        json!({"metadata": {"name": "quiet", "namespace": "d", "uid": "u"}, "automountServiceAccountToken": false})).await;
    let mut quiet = json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"serviceAccountName": "quiet", "containers": [{"name": "c", "image": "x"}]}});
    let before = quiet.clone();
    mount_api_access(&store, &mut quiet).unwrap();
    assert_eq!(quiet, before);
}
