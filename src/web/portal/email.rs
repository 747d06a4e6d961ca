//! Placeholder for the portal's email pages (being built).

use poem::Route;

pub fn routes() -> Route {
    Route::new()
}
