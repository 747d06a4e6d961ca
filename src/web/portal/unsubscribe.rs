//! Placeholder for the portal's unsubscribe pages (being built).

use poem::Route;

pub fn routes() -> Route {
    Route::new()
}
