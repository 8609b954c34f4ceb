//! Boolean query parameters, decoded as Kubernetes' parameter codec decodes them
//! (apimachinery's `Convert_Slice_string_To_bool`, used for ListOptions, PatchOptions,
//! PodExecOptions, PodLogOptions, PodAttachOptions, …): an absent parameter is false, `0` and
//! any spelling of `false` are false, and every other value — `true`, Python's `True`, `1`, `t`,
//! even an empty value — is true. Kubernetes never refuses such a value, so neither do we: a
//! client that writes `watch=True` must get a watch, not a list.

/// The value of a boolean parameter from the first value given for it (Kubernetes reads the
/// first of repeated values).
pub fn bool_param(first_value: Option<&str>) -> bool {
    match first_value {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

#[cfg(test)]
mod tests {
    use super::bool_param;

    #[test]
    fn go_spellings_decode_as_kubernetes_does() {
        for v in ["1", "t", "T", "TRUE", "true", "True", "yes", ""] {
            assert!(bool_param(Some(v)), "{v:?} must be true");
        }
        for v in ["0", "false", "False", "FALSE", "fAlSe"] {
            assert!(!bool_param(Some(v)), "{v:?} must be false");
        }
        assert!(!bool_param(None));
    }
}
