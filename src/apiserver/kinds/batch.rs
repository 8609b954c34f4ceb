//! Jobs and CronJobs: defaults, the generated controller-uid selector, validation (including
//! the cron schedule) and what may change after creation.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path};
use super::json::{self, default, obj};
use super::meta;
use super::pod;

pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

/// SetDefaults_Job.
pub fn default_job(job: &mut Value) {
    let spec = obj(job, "spec");
    if !json::is_set(spec, "completions") && !json::is_set(spec, "parallelism") {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if json::is_set(spec, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
    pod::default_template(obj(spec, "template"));
    let template_labels = spec.pointer("/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        let meta = obj(job, "metadata");
        if json::len_of(meta, "labels") == 0 {
            meta["labels"] = labels;
        }
    }
}

/// The job strategy's PrepareForCreate: unless the selector is manual, pods are labelled with
/// the job's uid and name and selected by the uid.
pub fn generate_selector(job: &mut Value) {
    let name = json::str_or(json::at(job, "metadata"), "name").to_string();
    let uid = json::str_or(json::at(job, "metadata"), "uid").to_string();
    let spec = obj(job, "spec");
    if json::bool_at(spec, "manualSelector") == Some(true) {
        return;
    }
    spec["manualSelector"] = json!(false);
    let labels = obj(obj(obj(spec, "template"), "metadata"), "labels");
    let Some(labels) = labels.as_object_mut() else {
        return;
    };
    for key in [LEGACY_JOB_NAME, JOB_NAME] {
        labels.entry(key).or_insert_with(|| json!(name));
    }
    for key in [LEGACY_CONTROLLER_UID, CONTROLLER_UID] {
        labels.entry(key).or_insert_with(|| json!(uid));
    }
    let selector = obj(spec, "selector");
    let ml = obj(selector, "matchLabels");
    if let Some(ml) = ml.as_object_mut() {
        ml.entry(CONTROLLER_UID).or_insert_with(|| json!(uid));
    }
}

fn nonnegative(spec: &Value, key: &str, path: &Path, errs: &mut Errors) {
    if let Some(n) = json::int_at(spec, key)
        && n < 0
    {
        errs.invalid(
            &path.child(key),
            Bad::Int(n),
            "must be greater than or equal to 0",
        );
    }
}

/// A JobSpec at `path`; a CronJob's template has no selector yet.
fn validate_job_spec(spec: &Value, path: &Path, needs_selector: bool, errs: &mut Errors) {
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonnegative(spec, key, path, errs);
    }
    let template = spec.get("template");
    match spec.get("selector").filter(|s| s.is_object()) {
        Some(sel) => {
            meta::validate_label_selector(sel, &path.child("selector"), errs);
            if let Some(t) = template
                && !meta::selector_matches(sel, t.pointer("/metadata/labels"))
            {
                errs.invalid(
                    &path.child("template").child("metadata").child("labels"),
                    Bad::Raw(super::field::go_string_map(
                        t.pointer("/metadata/labels").and_then(Value::as_object),
                    )),
                    "`selector` does not match template `labels`",
                );
            }
        }
        None if needs_selector => errs.required(&path.child("selector"), ""),
        None => {}
    }
    pod::validate_template(
        template,
        &path.child("template"),
        &["OnFailure", "Never"],
        None,
        errs,
    );
    match json::str_or(spec, "completionMode") {
        "" | "NonIndexed" => {}
        "Indexed" => {
            if !json::is_set(spec, "completions") {
                errs.required(
                    &path.child("completions"),
                    "when completion mode is Indexed",
                );
            }
        }
        other => errs.not_supported(
            &path.child("completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        ),
    }
    errs.check_enum(
        spec,
        "podReplacementPolicy",
        path,
        &["Failed", "TerminatingOrFailed"],
    );
}

pub fn validate_job(job: &Value, errs: &mut Errors) {
    let spec = json::at(job, "spec");
    let path = Path::root("spec");
    validate_job_spec(spec, &path, true, errs);
    if json::bool_at(spec, "manualSelector") != Some(true)
        && let Some(sel) = spec.get("selector")
    {
        let uid = json::str_or(json::at(job, "metadata"), "uid");
        let ml = sel.get("matchLabels").and_then(Value::as_object);
        let generated = ml.is_some_and(|m| {
            m.len() == 1 && m.get(CONTROLLER_UID).and_then(Value::as_str) == Some(uid)
        }) && json::len_of(sel, "matchExpressions") == 0;
        if !generated {
            errs.invalid(
                &path.child("selector"),
                Bad::Raw(meta::go_label_selector(sel)),
                "`selector` not auto-generated",
            );
        }
    }
}

/// What a Job may change: not its selector, completions (unless elastic), mode, or — once it has
/// started — its pod template.
pub fn validate_job_update(old: &Value, new: &Value, errs: &mut Errors) {
    let path = Path::root("spec");
    let (os, ns) = (json::at(old, "spec"), json::at(new, "spec"));
    if os.get("selector") != ns.get("selector") {
        errs.invalid(
            &path.child("selector"),
            Bad::Raw(meta::go_label_selector(json::at(ns, "selector"))),
            "field is immutable",
        );
    }
    let elastic = json::str_at(ns, "completionMode") == Some("Indexed")
        && ns.get("completions") == ns.get("parallelism");
    if os.get("completions") != ns.get("completions") && !elastic {
        errs.invalid(
            &path.child("completions"),
            Bad::json(json::at(ns, "completions")),
            "field is immutable",
        );
    }
    for key in ["completionMode", "podFailurePolicy"] {
        if os.get(key) != ns.get(key) {
            errs.invalid(
                &path.child(key),
                Bad::json(json::at(ns, key)),
                "field is immutable",
            );
        }
    }
    // A suspended job that never started may still have its pods' scheduling changed.
    let never_started =
        json::bool_at(os, "suspend") == Some(true) && old.pointer("/status/startTime").is_none();
    if os.get("template") != ns.get("template") && !never_started {
        errs.invalid(
            &path.child("template"),
            Bad::Raw("core.PodTemplateSpec{...}".into()),
            "field is immutable",
        );
    }
}

pub fn default_cron_job(cj: &mut Value) {
    let spec = obj(cj, "spec");
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    let jt = obj(spec, "jobTemplate");
    let meta = obj(jt, "metadata");
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = Value::Null;
    }
    pod::default_template(obj(obj(jt, "spec"), "template"));
}

pub fn validate_cron_job(cj: &Value, errs: &mut Errors) {
    let name = json::str_or(json::at(cj, "metadata"), "name");
    if name.len() > 52 {
        errs.invalid(
            &Path::root("metadata").child("name"),
            Bad::str(name),
            "must be no more than 52 characters",
        );
    }
    let spec = json::at(cj, "spec");
    let path = Path::root("spec");
    match json::str_at(spec, "schedule") {
        None | Some("") => errs.required(&path.child("schedule"), ""),
        Some(s) => {
            if let Err(msg) = parse_schedule(s) {
                errs.invalid(&path.child("schedule"), Bad::str(s), msg);
            }
        }
    }
    if let Some(tz) = json::str_at(spec, "timeZone")
        && let Err(msg) = load_time_zone(tz)
    {
        errs.invalid(&path.child("timeZone"), Bad::str(tz), msg);
    }
    match json::str_or(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.required(
            &path.child("concurrencyPolicy"),
            "supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ),
        other => errs.not_supported(
            &path.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        ),
    }
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonnegative(spec, key, &path, errs);
    }
    let jt = json::at(spec, "jobTemplate");
    let jpath = path.child("jobTemplate");
    meta::validate_meta_at(json::at(jt, "metadata"), &jpath.child("metadata"), errs);
    validate_job_spec(json::at(jt, "spec"), &jpath.child("spec"), false, errs);
}

/// A CronJob's `spec.timeZone`, from the system's zoneinfo when the node has one and otherwise
/// from the database built into the binary: node images hold no zoneinfo, and Kubernetes embeds
/// Go's tzdata for the same reason.
pub fn load_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err(
            "must be an explicit time zone as defined in https://www.iana.org/time-zones".into(),
        );
    }
    jiff::tz::db()
        .get(name)
        .or_else(|_| jiff::tz::TimeZoneDatabase::bundled().get(name))
        .map_err(|_| format!("unknown time zone {name}"))
}

const DESCRIPTORS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks a standard five-field cron schedule (or a descriptor such as `@hourly`), with the
/// messages of the cron library Kubernetes uses.
pub fn parse_schedule(s: &str) -> Result<(), String> {
    let trimmed = s.trim();
    if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if trimmed.starts_with('@') {
        if DESCRIPTORS.contains(&trimmed) || trimmed.starts_with("@every ") {
            return Ok(());
        }
        return Err(format!("unrecognized descriptor: {trimmed}"));
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {trimmed}",
            fields.len()
        ));
    }
    let bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    let names: [&[&str]; 5] = [
        &[],
        &[],
        &[],
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ];
    for ((field, (min, max)), named) in fields.iter().zip(bounds).zip(names) {
        for part in field.split(',') {
            check_cron_part(part, min, max, named)?;
        }
    }
    Ok(())
}

fn check_cron_part(part: &str, min: i64, max: i64, named: &[&str]) -> Result<(), String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (part, None),
    };
    if let Some(step) = step {
        parse_cron_int(step)?;
    }
    if range == "*" || range == "?" {
        return Ok(());
    }
    let value = |t: &str| -> Result<i64, String> {
        if let Some(i) = named.iter().position(|n| n.eq_ignore_ascii_case(t)) {
            return Ok(i as i64 + min);
        }
        parse_cron_int(t)
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (value(a)?, value(b)?),
        None => {
            let v = value(range)?;
            (v, v)
        }
    };
    if lo < min {
        return Err(format!(
            "beginning of range ({lo}) below minimum ({min}): {part}"
        ));
    }
    if hi > max {
        return Err(format!("end of range ({hi}) above maximum ({max}): {part}"));
    }
    if lo > hi {
        return Err(format!(
            "beginning of range ({lo}) beyond end of range ({hi}): {part}"
        ));
    }
    Ok(())
}

fn parse_cron_int(t: &str) -> Result<i64, String> {
    t.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        format!("failed to parse int from {t}: strconv.Atoi: parsing \"{t}\": invalid syntax")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_get_a_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}});
        default_job(&mut job);
        generate_selector(&mut job);
        default_job(&mut job);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(job["spec"]["manualSelector"], false);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"][CONTROLLER_UID],
            "u-1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(job["metadata"]["labels"][CONTROLLER_UID], "u-1");
        let mut errs = Errors::new();
        validate_job(&job, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn job_restart_policy_always_is_refused() {
        let mut job = json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "x"}]}}}});
        default_job(&mut job);
        generate_selector(&mut job);
        let mut errs = Errors::new();
        validate_job(&job, &mut errs);
        assert_eq!(
            errs.0[0].message(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
    }

    #[test]
    fn time_zones_come_from_the_built_in_database() {
        let bundled = jiff::tz::TimeZoneDatabase::bundled();
        assert!(bundled.get("Europe/Berlin").is_ok());
        assert!(bundled.get("America/New_York").is_ok());
        assert!(load_time_zone("Asia/Tokyo").is_ok());
        assert_eq!(
            load_time_zone("Mars/Olympus").unwrap_err(),
            "unknown time zone Mars/Olympus"
        );
        assert!(load_time_zone("Local").is_err());
    }

    #[test]
    fn cron_schedules() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 0 * * mon-fri").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert_eq!(
            parse_schedule("bad").unwrap_err(),
            "expected exactly 5 fields, found 1: bad"
        );
        assert_eq!(
            parse_schedule("61 * * * *").unwrap_err(),
            "end of range (61) above maximum (59): 61"
        );
    }
}
