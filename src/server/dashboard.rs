//! The dashboard at `/` of the metrics listener: one page, its script and
//! styles inside it, charts drawn as SVG by that script, so it works with no
//! internet. It polls `/api/status`, `/api/summary` and `/api/inspections`
//! every 5 s and shows the latest thumbnails (`/api/inspections/{id}/image`).

pub const PAGE: &str = include_str!("dashboard.html");
