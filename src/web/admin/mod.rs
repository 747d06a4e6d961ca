//! The admin console under `/admin` (being built).

use poem::Route;

pub fn routes() -> Route {
    Route::new()
}
