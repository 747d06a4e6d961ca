//! Placeholder for the portal's newsletters pages (being built).

use poem::Route;

pub fn routes() -> Route {
    Route::new()
}
