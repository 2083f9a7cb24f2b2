//! Pages of lists, as GitLab's API pages them: `page` and `per_page` in the
//! query; `X-Total`, `X-Total-Pages`, `X-Page`, `X-Per-Page`, `X-Next-Page`,
//! `X-Prev-Page` and a `Link` header (first, prev, next, last) that keeps
//! the request's other parameters.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use serde::Deserialize;

use super::ApiError;
use crate::store::Page;

/// Rows per page when the request names none, and at most.
const DEFAULT_PER_PAGE: u32 = 20;
const MAX_PER_PAGE: u32 = 100;
/// The last page a request may name: the schema's 32-bit integer.
const MAX_PAGE: u32 = i32::MAX as u32;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Which page, from 1 [default: 1].
    #[param(minimum = 1, maximum = 2147483647)]
    page: Option<u32>,
    /// Rows per page, 1 to 100 [default: 20].
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let page = self.page.unwrap_or(1);
        if page == 0 || page > MAX_PAGE {
            return Err(ApiError::invalid(
                "page",
                "pages count from 1 to 2147483647",
            ));
        }
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::invalid("per_page", "must be from 1 to 100"));
        }
        Ok(Page { page, per_page })
    }
}

/// The headers of `page` of a list of `total` rows requested as `uri`.
pub fn headers(uri: &Uri, page: Page, total: u64) -> HeaderMap {
    let pages = total.div_ceil(u64::from(page.per_page)).max(1);
    let current = u64::from(page.page);
    let mut map = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(HeaderName::from_static(name), value);
        }
    };
    put("x-total", total.to_string());
    put("x-total-pages", pages.to_string());
    put("x-page", current.to_string());
    put("x-per-page", page.per_page.to_string());
    let next = (current < pages).then_some(current + 1);
    let prev = (current > 1).then(|| (current - 1).min(pages));
    put(
        "x-next-page",
        next.map_or_else(String::new, |n| n.to_string()),
    );
    put(
        "x-prev-page",
        prev.map_or_else(String::new, |n| n.to_string()),
    );
    let mut links = Vec::new();
    for (rel, target) in [
        ("first", Some(1)),
        ("prev", prev),
        ("next", next),
        ("last", Some(pages)),
    ] {
        if let Some(target) = target {
            links.push(format!("<{}>; rel=\"{rel}\"", with_page(uri, target)));
        }
    }
    if let Ok(value) = HeaderValue::from_str(&links.join(", ")) {
        map.insert(header::LINK, value);
    }
    map
}

/// `uri` with its `page` parameter set to `target`, the rest kept.
fn with_page(uri: &Uri, target: u64) -> String {
    let query = uri.query().unwrap_or_default();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "page" {
            out.append_pair(&key, &value);
        }
    }
    out.append_pair("page", &target.to_string());
    format!("{}?{}", uri.path(), out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_filters_and_stop_at_the_ends() {
        let uri: Uri = "/api/v1/mirrors?state=failing&page=2&per_page=10"
            .parse()
            .unwrap();
        let page = Page {
            page: 2,
            per_page: 10,
        };
        let h = headers(&uri, page, 25);
        let get = |name: &str| h.get(name).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            (get("x-total"), get("x-total-pages")),
            ("25".into(), "3".into())
        );
        assert_eq!(
            (get("x-next-page"), get("x-prev-page")),
            ("3".into(), "1".into())
        );
        assert_eq!(
            get("link"),
            "</api/v1/mirrors?state=failing&per_page=10&page=1>; rel=\"first\", \
             </api/v1/mirrors?state=failing&per_page=10&page=1>; rel=\"prev\", \
             </api/v1/mirrors?state=failing&per_page=10&page=3>; rel=\"next\", \
             </api/v1/mirrors?state=failing&per_page=10&page=3>; rel=\"last\""
        );
        let last = headers(
            &uri,
            Page {
                page: 3,
                per_page: 10,
            },
            25,
        );
        assert_eq!(last.get("x-next-page").unwrap(), "");
        let empty = headers(
            &uri,
            Page {
                page: 1,
                per_page: 10,
            },
            0,
        );
        assert_eq!(empty.get("x-total-pages").unwrap(), "1");
    }
}
