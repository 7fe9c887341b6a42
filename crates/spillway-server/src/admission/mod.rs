//! Admission and dispatch: the one fair queue that hands each request a Python thread
//! (`pool`), the request's exchange with its worker (`dispatch`, with the upload deadlines
//! of `upload`), and the framed socket to each worker that the exchange runs over (`link`).

pub mod dispatch;
pub mod link;
pub mod pool;
pub mod upload;
