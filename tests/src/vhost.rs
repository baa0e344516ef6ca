//! A RabbitMQ virtual host per test (exchanges and queues of one test cannot see
//! another's), created and deleted with `rabbitmqctl` (needs root or the broker's Erlang
//! cookie).

use std::process::Command;

use anyhow::Context;

/// The broker's host and port, overridable with `COINHUB_TEST_AMQP_HOST`.
pub fn broker_host() -> String {
    std::env::var("COINHUB_TEST_AMQP_HOST")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "127.0.0.1:5672".to_owned())
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl").args(args).output().context(
        "cannot run rabbitmqctl; install RabbitMQ (apt-get install rabbitmq-server) and start it \
         (rabbitmq-server -detached)",
    )?;
    anyhow::ensure!(
        output.status.success(),
        "rabbitmqctl {} failed ({}): {}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A vhost on the local broker where user `guest` may do everything; deleted on drop.
pub struct Vhost {
    name: String,
}

impl Vhost {
    /// Creates `coinhub-test-<random>`.
    pub fn create() -> anyhow::Result<Self> {
        Self::create_named(&format!(
            "coinhub-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))
    }

    /// Creates (or reuses) the vhost `name`; `name` must be URL-safe.
    pub fn create_named(name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "vhost name {name:?} must be URL-safe"
        );
        rabbitmqctl(&["add_vhost", name])?;
        let vhost = Self {
            name: name.to_owned(),
        };
        rabbitmqctl(&["set_permissions", "-p", name, "guest", ".*", ".*", ".*"])?;
        Ok(vhost)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<name>`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/{}", broker_host(), self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(error) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("note: {error:#}");
        }
    }
}
