use super::*;

#[test]
fn certificate_users_join_system_authenticated_once() {
    let jane = ClientIdentity {
        user: "jane".into(),
        groups: vec!["devs".into()],
    };
    let once = authenticated(&jane);
    assert_eq!(once.groups, ["devs", AUTHENTICATED]);
    assert_eq!(authenticated(&once).groups, once.groups);
}

#[tokio::test]
async fn the_requester_is_known_only_inside_its_request() {
    let credentials = Credentials {
        identity: ClientIdentity {
            user: "jane".into(),
            groups: vec!["devs".into()],
        },
        token: None,
        signer: None,
    };
    assert!(requester().is_none());
    let seen = serve_as(Some(credentials), async { requester() }).await;
    assert_eq!(
        seen,
        Some(UserInfo {
            username: "jane".into(),
            groups: vec!["devs".into()],
            ..Default::default()
        })
    );
}

#[test]
fn reviews_have_their_paths() {
    assert_eq!(
        owns("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
        Some("SelfSubjectReview")
    );
    assert_eq!(
        owns("/apis/authentication.k8s.io/v1/tokenreviews"),
        Some("TokenReview")
    );
    assert_eq!(owns("/apis/authentication.k8s.io/v1"), None);
}

#[test]
fn self_subject_review_shows_the_user() {
    let user = UserInfo {
        username: "jane".into(),
        uid: None,
        groups: vec!["devs".into(), AUTHENTICATED.into()],
        extra: Default::default(),
    };
    let review = self_subject_review(&user, "application/json", &Bytes::new()).unwrap();
    assert_eq!(
        review["status"]["userInfo"],
        json!({"username": "jane", "groups": ["devs", "system:authenticated"]})
    );
}
