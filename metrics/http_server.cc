#include "metrics/http_server.h"

#include <netdb.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace fedge::metrics {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kIoTimeoutMs = 2000;

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, kIoTimeoutMs) <= 0) return false;
    const ssize_t n =
        send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const std::string& host, int port, std::function<std::string()> render) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* info = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(),
                           port_text.c_str(), &hints, &info);
      rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address ", host, ":", port, ": ", gai_strerror(rc)));
  }
  const int fd = socket(info->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(info);
    return Errno("metrics socket");
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, info->ai_addr, info->ai_addrlen) != 0 || listen(fd, 16) != 0) {
    const absl::Status status =
        Errno(absl::StrCat("metrics listen on ", host, ":", port));
    freeaddrinfo(info);
    close(fd);
    return status;
  }
  freeaddrinfo(info);
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int actual =
      bound.ss_family == AF_INET6
          ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
          : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<HttpServer>(
      new HttpServer(fd, actual, std::move(render)));
}

HttpServer::HttpServer(int fd, int port, std::function<std::string()> render)
    : fd_(fd), port_(port), render_(std::move(render)) {
  thread_ = std::thread([this] { Serve(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

void HttpServer::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    Handle(client);
    close(client);
  }
}

void HttpServer::Handle(int client) {
  std::string request;
  char buffer[1024];
  const absl::Time deadline = absl::Now() + absl::Milliseconds(kIoTimeoutMs);
  while (!absl::StrContains(request, "\r\n\r\n") &&
         !absl::StrContains(request, "\n\n")) {
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{client, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, left) <= 0) return;
    const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
    if (request.size() > kMaxRequest) {
      SendAll(client, "HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n");
      return;
    }
  }
  std::string status = "200 OK";
  std::string body;
  std::string type = "text/plain; version=0.0.4; charset=utf-8";
  if (!absl::StartsWith(request, "GET ")) {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (absl::StartsWith(request, "GET /metrics ") ||
             absl::StartsWith(request, "GET /metrics?")) {
    body = render_();
  } else {
    status = "404 Not Found";
    body = "fedge serves /metrics\n";
  }
  SendAll(client, absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", type,
                               "\r\nContent-Length: ", body.size(),
                               "\r\nConnection: close\r\n\r\n", body));
}

absl::StatusOr<std::string> HttpGet(const std::string& host, int port,
                                    const std::string& path) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* info = nullptr;
  const std::string port_text = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &info);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(host, ":", port, ": ", gai_strerror(rc)));
  }
  const int fd = socket(info->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, info->ai_addr, info->ai_addrlen) != 0) {
    const absl::Status status =
        Errno(absl::StrCat("connect to ", host, ":", port));
    freeaddrinfo(info);
    if (fd >= 0) close(fd);
    return status;
  }
  freeaddrinfo(info);
  std::string response;
  if (SendAll(fd, absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host,
                               "\r\n\r\n"))) {
    char buffer[4096];
    while (true) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, kIoTimeoutMs) <= 0) break;
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      response.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  const size_t head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return absl::UnavailableError(
        absl::StrCat("no HTTP response from ", host, ":", port));
  }
  const std::string status_line = response.substr(0, response.find("\r\n"));
  if (!absl::StrContains(status_line, " 200 ")) {
    return absl::UnavailableError(absl::StrCat("GET ", path, " from ", host,
                                               ":", port, ": ", status_line));
  }
  return response.substr(head_end + 4);
}

}  // namespace fedge::metrics
