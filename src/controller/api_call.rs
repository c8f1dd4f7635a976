//! The error of the template, pool and claim controllers: an API call that failed, named by
//! what it did to which object. Callers retry; none branches on more than that.

#[derive(Debug, thiserror::Error)]
#[error("{action} {what}: {source}")]
pub struct ApiCallFailed {
    pub action: &'static str,
    pub what: String,
    #[source]
    pub source: kube::Error,
}

/// Names a failed call, for `map_err`.
pub fn failed(
    action: &'static str,
    what: impl Into<String>,
) -> impl FnOnce(kube::Error) -> ApiCallFailed {
    let what = what.into();
    move |source| ApiCallFailed {
        action,
        what,
        source,
    }
}
