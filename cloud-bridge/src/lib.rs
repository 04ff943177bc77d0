//! `fulmar-bridge`: the clustered cloud service edge nodes connect to.
//!
//! Empty until the cloud-bridge issue lands.
