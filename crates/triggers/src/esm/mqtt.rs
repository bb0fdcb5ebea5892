//! MQTT topics (IoT messages): a persistent session (`clean_session = false`, client id
//! `stratus-<mapping UUID>`) subscribed with QoS 1 and manual acknowledgements. A message
//! is acknowledged (`PUBACK`) only after its batch succeeded or went to the on-failure
//! destination, so the broker redelivers what a crash or a lost connection left unacknowledged,
//! and keeps what is published while the poller is away.
//!
//! AWS IoT rules hand functions the message itself; a mapping delivers batches, so each
//! message is a record (the payload base64 in `data`, like Kinesis):
//!
//! ```json
//! {"Records": [{"eventSource": "stratus:mqtt", "eventSourceARN": "arn:stratus:mqtt:us-east-1:000000000000:sensors/#",
//!   "awsRegion": "us-east-1", "messageId": "…", "topic": "sensors/1", "qos": 1, "retain": false,
//!   "dup": false, "approximateArrivalTimestamp": 1700000000.123, "data": "eyJ0IjogMjF9"}]}
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::esm::Mapping;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use super::text::Obj;
use super::{Error, Record, Source, Token, gather, now_ms};

pub(crate) struct Mqtt {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::Publish, String>>,
    driver: tokio::task::JoinHandle<()>,
    /// The members every record has: `eventSource`, `eventSourceARN`, `awsRegion`.
    shared: String,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `mqtt://host:port` (or `host:port`) → host and port (1883 by default).
fn address(url: &str) -> Result<(String, u16), Error> {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| format!("invalid MQTT port in {url}"))?)),
        None => Ok((rest.to_string(), 1883)),
    }
}

impl Mqtt {
    pub(crate) async fn connect(mapping: Arc<Mapping>, scope: &model::Scope) -> Result<Self, Error> {
        let (host, port) = address(&mapping.source.endpoints[0])?;
        let mut opts = MqttOptions::new(format!("stratus-{}", mapping.uuid), host, port);
        opts.set_clean_session(false);
        opts.set_manual_acks(true);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_max_packet_size(8 << 20, 8 << 20);
        let cap = (mapping.batch_size as usize).clamp(16, 10_000);
        let (client, mut eventloop) = AsyncClient::new(opts, cap);
        let topic = mapping.source.name.clone();
        // Unbounded, so the event loop (which also sends our acknowledgements and keep-alive
        // pings) never waits for the poller; QoS 1 flow control bounds what is in flight.
        let (tx, rx) = mpsc::unbounded_channel();
        // The first connection decides whether the broker is reachable at all.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let sub = client.clone();
        let driver = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        // A new session (or a broker that lost it) needs the subscription again.
                        if !ack.session_present && sub.subscribe(topic.clone(), QoS::AtLeastOnce).await.is_err() {
                            break;
                        }
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(Ok(p)).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = e.to_string();
                        match ready.take() {
                            Some(r) => {
                                let _ = r.send(Err(msg));
                            }
                            // The poller reconnects with a new client: acknowledgements of this
                            // connection's packet ids must never go out on another one.
                            None => {
                                let _ = tx.send(Err(msg));
                            }
                        }
                        break;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e.into()),
            _ => {
                driver.abort();
                return Err("timed out connecting to the MQTT broker".into());
            }
        }
        let mut shared = Obj::new(256);
        shared.str("eventSource", "stratus:mqtt").str("eventSourceARN", &mapping.source.arn(scope));
        shared.str("awsRegion", &scope.region);
        Ok(Self { client, rx, driver, shared: shared.rendered() })
    }

    fn record(&self, p: rumqttc::Publish) -> Record {
        let arrival_ms = now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let mut o = Obj::new(320 + p.payload.len() * 4 / 3);
        o.members(&self.shared)
            .str("messageId", &id)
            .str("topic", &p.topic)
            .num("qos", p.qos as u8)
            .num("retain", p.retain);
        o.num("dup", p.dup).seconds("approximateArrivalTimestamp", arrival_ms).b64("data", &p.payload);
        let body = o.finish();
        Record { partition: p.topic.clone(), id, arrival_ms, body, token: Token::Mqtt(Arc::new(p)) }
    }
}

impl Source for Mqtt {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let rx = &mut self.rx;
            let mut stream = futures_util::stream::poll_fn(|cx| rx.poll_recv(cx));
            // A dropped connection mid-batch fails it; the broker redelivers what was not acknowledged.
            let publishes = gather(&mut stream, max, window, idle).await?;
            Ok(publishes.into_iter().map(|p| self.record(p)).collect())
        })
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let publishes: Vec<Arc<rumqttc::Publish>> = done
            .iter()
            .filter_map(|r| match &r.token {
                Token::Mqtt(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let client = self.client.clone();
        Box::pin(async move {
            for p in publishes {
                client.ack(&p).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses() {
        assert_eq!(super::address("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884));
        assert_eq!(super::address("localhost").unwrap(), ("localhost".into(), 1883));
    }
}
