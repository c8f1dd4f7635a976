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

/// A delete (or read) whose object is gone already counts as done.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// True for an API answer that says "this will not be made as asked" (forbidden, invalid,
/// not found, quota), as opposed to a conflict, throttling or a server fault worth a retry.
pub fn is_refusal(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 409 | 429)
}

/// `K` in `namespace`, or in every namespace: what a controller scoped by `--namespace` lists
/// and watches.
pub fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}
