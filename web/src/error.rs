//! What a request to the page can fail with, and how each is answered.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The page's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The drive refused or failed.
    #[error("{0}")]
    Drive(#[from] drive::Error),
    /// A page did not render.
    #[error("the page did not render: {0}")]
    Template(#[from] askama::Error),
    /// The request is not one the page takes: its status and why.
    #[error("{1}")]
    Refused(StatusCode, String),
    /// No session, or one that ended: log in (again).
    #[error("{0}")]
    LogIn(&'static str),
}

/// The page's results.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A request refused with `status`, saying `why`.
    pub(crate) fn refused(status: StatusCode, why: impl Into<String>) -> Error {
        Error::Refused(status, why.into())
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::Drive(drive::Error::NotInDrive(_)) => StatusCode::NOT_FOUND,
            Error::Drive(drive::Error::BadPath { .. }) => StatusCode::BAD_REQUEST,
            Error::Drive(drive::Error::Exists(_)) => StatusCode::CONFLICT,
            Error::Drive(drive::Error::NoRoom(_)) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Drive(_) => StatusCode::BAD_GATEWAY,
            Error::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Refused(s, _) => *s,
            Error::LogIn(_) => StatusCode::SEE_OTHER,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Error::LogIn(why) = self {
            // A browser follows Location, htmx HX-Redirect; a script that
            // does not follow redirects reads the text.
            let to = format!("/login?why={why}");
            let headers = [("location", to.as_str()), ("HX-Redirect", to.as_str())];
            return (status, headers, crate::session::login_why(why).to_string()).into_response();
        }
        if status.is_server_error() {
            tracing::warn!("web: {self}");
        }
        (status, [("content-type", "text/plain; charset=utf-8")], format!("{self}\n")).into_response()
    }
}
