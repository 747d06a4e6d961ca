//! The pages' stylesheet and scripts, compiled into the binary (no build step).

use poem::http::{header, StatusCode};
use poem::web::Path;
use poem::{handler, Response, Route};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "portal.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/portal.css"),
    },
    Asset {
        name: "portal.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/portal.js"),
    },
    Asset {
        name: "member-attribution.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/member-attribution.js"),
    },
];

pub fn routes() -> Route {
    Route::new().at("/:name", poem::get(serve))
}

#[handler]
fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        // The member site includes member-attribution.js from another origin, and pages are
        // reloaded after deploys: an hour, revalidated after.
        Some(asset) => Response::builder()
            .content_type(asset.content_type)
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .header("cross-origin-resource-policy", "cross-origin")
            .body(asset.body),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body("no such asset"),
    }
}
