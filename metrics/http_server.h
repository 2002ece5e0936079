// A minimal HTTP/1.0 server for Prometheus scrapes: GET /metrics returns
// what the render callback gives; anything else 404 (or 405 for another
// method). One connection at a time, each bounded in size (8 KiB of
// request) and time (2 s), so a slow or hostile peer cannot hold it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace fedge::metrics {

// Thread-safe: the server runs on its own thread until destroyed.
class HttpServer {
 public:
  // Listens on host:port (port 0 picks a free one) and serves in the
  // background. `render` is called on the server's thread for each scrape.
  // Unavailable (naming host:port and the errno text) if it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const std::string& host, int port, std::function<std::string()> render);

  ~HttpServer();  // Stops and joins.
  int port() const { return port_; }

 private:
  HttpServer(int fd, int port, std::function<std::string()> render);
  void Serve();
  void Handle(int client);

  const int fd_;
  const int port_;
  const std::function<std::string()> render_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// GETs http://host:port/path; the body on a 200, else an error naming the
// status line. For tests and `fedge-coordinator --check_metrics`.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port,
                                    const std::string& path);

}  // namespace fedge::metrics
