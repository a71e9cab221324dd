//! The blob store: input images and result videos, through `object_store` (a local folder
//! when embedded; S3 and friends later). The database only holds blob keys.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::Result;

/// Read size when streaming a local file into the blob store.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Multipart part size: S3 (and compatible stores) refuse parts under 5 MiB but the last.
const UPLOAD_PART: usize = 8 << 20;

/// Where input images and result videos live, by key (`inputs/…`, `results/…`);
/// cheap to clone. Every server of a fleet must see the same one.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// S3's URL signer and the key prefix of the `s3://` URL (the signer sees whole
    /// object paths, not the prefixed store's).
    presigner: Option<(Arc<dyn Signer>, String)>,
}

impl Blobs {
    /// Any `object_store` backend, without presigned URLs ([`Blobs::local`] and
    /// [`Blobs::from_url`] build on it).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            presigner: None,
        }
    }

    /// A folder on local disk (created if missing).
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self::new(Arc::new(fs)))
    }

    /// A blob store named by URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (credentials and endpoint from the provider's standard
    /// environment variables, e.g. `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`), or `file:///path`.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| {
            crate::StoreError::Config(format!("blob URL {url:?} is not a URL: {e}"))
        })?;
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => {
                if bucket.is_empty() {
                    return Err(crate::StoreError::Config(format!(
                        "blob URL {url:?} names no bucket"
                    )));
                }
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .build()?;
                return Ok(Self::s3(s3, &prefix));
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .build()?,
            ),
            "az" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .build()?,
            ),
            "file" => return Self::local(Path::new(parsed.path())),
            other => {
                return Err(crate::StoreError::Config(format!(
                    "unsupported blob URL scheme {other:?}: use s3://, gs://, az:// or file://"
                )));
            }
        };
        if bucket.is_empty() {
            return Err(crate::StoreError::Config(format!(
                "blob URL {url:?} names no bucket"
            )));
        }
        Ok(Self::with_prefix(store, &prefix))
    }

    fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        if prefix.is_empty() {
            Self::new(store)
        } else {
            Self::new(Arc::new(object_store::prefix::PrefixStore::new(
                store, prefix,
            )))
        }
    }

    /// An S3 bucket under `prefix`, which can also presign URLs.
    fn s3(s3: object_store::aws::AmazonS3, prefix: &str) -> Self {
        let s3 = Arc::new(s3);
        Self {
            presigner: Some((s3.clone(), prefix.to_string())),
            ..Self::with_prefix(s3, prefix)
        }
    }

    /// Whether [`Blobs::presigned_get`] can sign URLs (S3 blob storage).
    pub fn can_presign(&self) -> bool {
        self.presigner.is_some()
    }

    /// A presigned GET URL of `key` valid for `ttl`, from S3's signer; `None` when the
    /// store is not S3.
    pub async fn presigned_get(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        let Some((signer, prefix)) = &self.presigner else {
            return Ok(None);
        };
        let path = if prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{prefix}/{key}"))
        };
        let url = signer.signed_url(http::Method::GET, &path, ttl).await?;
        Ok(Some(url.to_string()))
    }

    /// The bytes `range` (end exclusive) of a blob as a stream, never held whole.
    pub async fn stream_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let got = self
            .store
            .get_opts(
                &ObjectPath::from(key),
                GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..GetOptions::default()
                },
            )
            .await?;
        Ok(got
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed())
    }

    /// The key of a job's input image; the create writes it before the job row.
    pub fn input_key(job: Uuid) -> String {
        format!("inputs/{job}")
    }

    /// One key per lease, so a lost worker's late upload can never overwrite the
    /// video of the attempt that won.
    pub fn result_key(job: Uuid, lease_token: i64) -> String {
        format!("results/{job}/{lease_token}.mp4")
    }

    /// Writes `data` under `key` in one request, replacing what was there.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(data))
            .await?;
        Ok(())
    }

    /// Streams a file into the blob store without holding it in memory.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<u64> {
        let mut reader = tokio::fs::File::open(file).await?;
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut total = 0u64;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&buf[..n]);
            total += n as u64;
        }
        writer.finish().await?;
        Ok(total)
    }

    /// Streams `data` into the blob store, refusing (and removing) it past `limit` bytes.
    pub async fn put_stream(
        &self,
        key: &str,
        data: impl futures::Stream<Item = std::io::Result<Bytes>> + Send,
        limit: u64,
    ) -> Result<u64> {
        let path = ObjectPath::from(key);
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut total = 0u64;
        futures::pin_mut!(data);
        while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            };
            total += chunk.len() as u64;
            if total > limit {
                let _ = writer.abort().await;
                return Err(crate::StoreError::TooLarge(limit));
            }
            writer.wait_for_capacity(4).await?;
            writer.write(&chunk);
        }
        writer.finish().await?;
        Ok(total)
    }

    /// The blob's size in bytes, without reading it; not-found if it is missing.
    pub async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.store.head(&ObjectPath::from(key)).await?.size)
    }

    /// The whole blob in memory: for input images, which are bounded by the body limit.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self
            .store
            .get(&ObjectPath::from(key))
            .await?
            .bytes()
            .await?)
    }

    /// The blob's size and a stream of its bytes.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, std::io::Result<Bytes>>)> {
        let got = self.store.get(&ObjectPath::from(key)).await?;
        let size = got.meta.size;
        let stream = got
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Ok((size, stream))
    }

    /// Deletes `key`. A missing key is an error on some backends (the local one), not on
    /// others; use [`Blobs::delete_if_exists`] where gone is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(&ObjectPath::from(key)).await?;
        Ok(())
    }

    /// Deletes `key`; `Ok(false)` when it was already gone.
    pub async fn delete_if_exists(&self, key: &str) -> Result<bool> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every blob under `prefix` (a folder such as `inputs`) with when it was last
    /// written (Unix ms), in the store's order; pages are fetched as the stream is read.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<(String, i64)>> {
        self.store
            .list(Some(&ObjectPath::from(prefix)))
            .map(|meta| {
                let meta = meta?;
                Ok((
                    meta.location.to_string(),
                    meta.last_modified.timestamp_millis(),
                ))
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_bytes_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(&dir.path().join("blobs")).unwrap();
        blobs
            .put("inputs/a", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            blobs.get("inputs/a").await.unwrap(),
            Bytes::from_static(b"hello")
        );

        let file = dir.path().join("big.bin");
        let data: Vec<u8> = (0..3 * UPLOAD_CHUNK + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&file, &data).unwrap();
        assert_eq!(
            blobs.put_file("results/x.mp4", &file).await.unwrap(),
            data.len() as u64
        );
        let (size, stream) = blobs.stream("results/x.mp4").await.unwrap();
        assert_eq!(size, data.len() as u64);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), data);
        let part: Vec<Bytes> = blobs
            .stream_range("results/x.mp4", 5..UPLOAD_CHUNK as u64 + 9)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(part.concat(), &data[5..UPLOAD_CHUNK + 9]);
        assert!(!blobs.can_presign());

        blobs.delete("inputs/a").await.unwrap();
        assert!(blobs.get("inputs/a").await.is_err());
    }

    #[tokio::test]
    async fn s3_blobs_presign_urls_of_whole_object_paths() {
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("videos")
            .with_region("us-east-1")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("secret")
            .build()
            .unwrap();
        let blobs = Blobs::s3(s3, "pipelet/prod");
        assert!(blobs.can_presign());
        let url = blobs
            .presigned_get("results/x/1.mp4", Duration::from_secs(7200))
            .await
            .unwrap()
            .expect("an S3 store presigns");
        assert!(url.contains("/pipelet/prod/results/x/1.mp4?"), "{url}");
        assert!(url.contains("X-Amz-Expires=7200"), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }
}
