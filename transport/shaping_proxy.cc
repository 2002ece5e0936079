#include "transport/shaping_proxy.h"

#include <netdb.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace fedge::transport {
namespace {

using Clock = std::chrono::steady_clock;

// One direction of a connection: reader -> queue -> paced writer.
class Pipe {
 public:
  Pipe(int from, int to, double rate, absl::Duration delay, int64_t burst,
       std::atomic<int64_t>* counter)
      : from_(from),
        to_(to),
        rate_(rate),
        delay_(absl::ToChronoNanoseconds(delay)),
        burst_(burst),
        limit_(QueueLimit(rate, delay, burst)),
        counter_(counter) {
    reader_ = std::thread([this] { ReadLoop(); });
    writer_ = std::thread([this] { WriteLoop(); });
  }
  ~Pipe() {
    Stop();
    reader_.join();
    writer_.join();
  }
  void Stop() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  // Both threads are done: the direction is closed and drained.
  bool finished() const { return running_.load() == 0; }

 private:
  struct Piece {
    Clock::time_point release;
    std::string bytes;
  };

  // What a link holds in flight plus a router queue of 50 ms: once that
  // much waits, the reader stops and TCP's flow control pushes back on the
  // sender, as on a real link (an unbounded queue would let a sender
  // "finish" at memory speed).
  static int64_t QueueLimit(double rate, absl::Duration delay, int64_t burst) {
    if (rate <= 0) return 8 << 20;
    return std::max<int64_t>(
        64 << 10,
        static_cast<int64_t>(rate * (absl::ToDoubleSeconds(delay) + 0.05)) +
            burst);
  }

  void ReadLoop() {
    char buffer[64 * 1024];
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Pipe* p) {
              p->mu_.AssertHeld();  // Await evaluates it under mu_.
              return p->queued_ < p->limit_ || p->closed_;
            },
            this));
      }
      const ssize_t n = ::read(from_, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      absl::MutexLock lock(&mu_);
      if (n <= 0 || closed_) {
        eof_ = true;
        --running_;
        return;
      }
      queue_.push_back({Clock::now() + delay_, std::string(buffer, n)});
      queued_ += n;
    }
  }

  void WriteLoop() {
    double tokens = static_cast<double>(burst_);
    Clock::time_point last = Clock::now();
    while (true) {
      Piece piece;
      // Whether the link stayed busy since the last send: bytes were
      // waiting, released, when this thread came back for them.
      bool backlogged = false;
      {
        absl::MutexLock lock(&mu_);
        backlogged = !queue_.empty();
        mu_.Await(absl::Condition(
            +[](Pipe* p) {
              p->mu_.AssertHeld();  // Await evaluates it under mu_.
              return !p->queue_.empty() || p->eof_ || p->closed_;
            },
            this));
        if (closed_ || queue_.empty()) {
          ::shutdown(to_, SHUT_WR);  // Pass the half-close on.
          --running_;
          return;
        }
        piece = std::move(queue_.front());
        queue_.pop_front();
        queued_ -= static_cast<int64_t>(piece.bytes.size());
      }
      if (piece.release > Clock::now()) {
        backlogged = false;  // Nothing released yet: the link idles.
        std::this_thread::sleep_until(piece.release);
      }
      size_t sent = 0;
      while (sent < piece.bytes.size()) {
        size_t n = piece.bytes.size() - sent;
        if (rate_ > 0) {
          n = std::min<size_t>(n, burst_);
          const Clock::time_point now = Clock::now();
          // An idle link keeps at most a bucket of tokens. A busy one
          // keeps what it earned while this thread was not running (the
          // machine's other threads preempt it for a time slice or more,
          // longer than the bucket on a fast link, and a real link sends
          // regardless), up to kCatchUp of its rate.
          const double cap =
              backlogged ? std::max<double>(burst_, rate_ * kCatchUp) : burst_;
          tokens = std::min<double>(
              cap,
              tokens +
                  rate_ * std::chrono::duration<double>(now - last).count());
          last = now;
          if (tokens < n) {
            const double wait = (n - tokens) / rate_;
            std::this_thread::sleep_for(std::chrono::duration<double>(wait));
            const Clock::time_point later = Clock::now();
            tokens +=
                rate_ * std::chrono::duration<double>(later - last).count();
            last = later;
          }
          tokens -= n;
        }
        const ssize_t w =
            ::send(to_, piece.bytes.data() + sent, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          absl::MutexLock lock(&mu_);
          closed_ = true;
          --running_;
          return;
        }
        sent += static_cast<size_t>(w);
        counter_->fetch_add(w);
        backlogged = true;  // The rest of the piece is waiting.
      }
    }
  }

  // Seconds of tokens a busy link may catch up on (the router queue's
  // length, QueueLimit).
  static constexpr double kCatchUp = 0.05;

  const int from_;
  const int to_;
  const double rate_;
  const Clock::duration delay_;
  const int64_t burst_;
  const int64_t limit_;  // Most bytes queued before the reader waits.
  std::atomic<int64_t>* const counter_;
  std::atomic<int> running_{2};
  absl::Mutex mu_;
  std::deque<Piece> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool eof_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reader_;
  std::thread writer_;
};

int Connect(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints,
                  &result) != 0) {
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = result; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(result);
  return fd;
}

}  // namespace

struct ShapingProxy::Connection {
  Connection(int client, int target, const ShapingOptions& o,
             std::atomic<int64_t>* up, std::atomic<int64_t>* down)
      : client_fd(client),
        target_fd(target),
        up_pipe(std::make_unique<Pipe>(client, target, o.uplink_bytes_per_s,
                                       o.one_way_delay, o.burst_bytes, up)),
        down_pipe(std::make_unique<Pipe>(target, client, o.downlink_bytes_per_s,
                                         o.one_way_delay, o.burst_bytes,
                                         down)) {}
  ~Connection() {
    Cut();
    up_pipe.reset();
    down_pipe.reset();
    ::close(client_fd);
    ::close(target_fd);
  }
  bool finished() const { return up_pipe->finished() && down_pipe->finished(); }
  void Cut() {
    // Unblocks both readers; the writers then see EOF and stop.
    up_pipe->Stop();
    down_pipe->Stop();
    ::shutdown(client_fd, SHUT_RDWR);
    ::shutdown(target_fd, SHUT_RDWR);
  }
  const int client_fd;
  const int target_fd;
  std::unique_ptr<Pipe> up_pipe;
  std::unique_ptr<Pipe> down_pipe;
};

ShapingOptions ShapingOptions::FromProfile(const LinkProfile& link) {
  ShapingOptions o;
  o.uplink_bytes_per_s = link.uplink_bytes_per_s();
  o.downlink_bytes_per_s = link.downlink_bytes_per_s();
  o.one_way_delay = link.rtt / 2;
  // A bucket of 2 ms of the faster direction, like a tbf burst sized to the
  // timer tick: smaller buckets make every refill a sub-millisecond sleep,
  // whose overshoot alone cost a third of a gigabit link's rate.
  o.burst_bytes = std::max<int64_t>(
      16 * 1024,
      static_cast<int64_t>(
          std::max(o.uplink_bytes_per_s, o.downlink_bytes_per_s) * 0.002));
  return o;
}

namespace {

struct Listener {
  int fd;
  int port;
};

// A listening socket on 127.0.0.1:port (0: an ephemeral port).
absl::StatusOr<Listener> ListenLoopback(int port, absl::string_view who) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat(who, ": socket() failed: ", std::strerror(errno)));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t length = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat(who, ": cannot listen: ", error));
  }
  return Listener{fd, ntohs(addr.sin_port)};
}

// Sends all of `bytes`; false if the connection failed.
bool SendAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads exactly `count` bytes (discarded); false if the connection ended.
bool ReadExactly(int fd, int64_t count) {
  char buffer[1 << 16];
  while (count > 0) {
    const ssize_t n =
        ::read(fd, buffer,
               static_cast<size_t>(std::min<int64_t>(count, sizeof(buffer))));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    count -= n;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShapingProxy>> ShapingProxy::Start(
    const std::string& target_host, int target_port,
    const ShapingOptions& options, int listen_port) {
  if (options.uplink_bytes_per_s < 0 || options.downlink_bytes_per_s < 0 ||
      options.burst_bytes < 1 || options.one_way_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "shaping proxy: bad rates, burst or delay");
  }
  absl::StatusOr<Listener> listener =
      ListenLoopback(listen_port, "shaping proxy");
  if (!listener.ok()) return listener.status();
  return std::unique_ptr<ShapingProxy>(new ShapingProxy(
      target_host, target_port, options, listener->fd, listener->port));
}

absl::StatusOr<LinkCheck> MeasureLink(const LinkProfile& link, double seconds) {
  if (!(link.uplink_mbps > 0) || !(link.downlink_mbps > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "link check of ", link.name, ": needs both rates, got ",
        link.uplink_mbps, " up and ", link.downlink_mbps, " down Mbit/s"));
  }
  auto size_for = [seconds](double bytes_per_s) {
    return std::clamp<int64_t>(static_cast<int64_t>(bytes_per_s * seconds),
                               64 << 10, 64000000);
  };
  const int64_t up = size_for(link.uplink_bytes_per_s());
  const int64_t down = size_for(link.downlink_bytes_per_s());
  absl::StatusOr<Listener> far = ListenLoopback(0, "link check");
  if (!far.ok()) return far.status();
  // The far end: takes the upload, acknowledges it with one byte, then
  // answers a one-byte request with the download.
  std::thread peer([&far, up, down] {
    const int c = ::accept(far->fd, nullptr, nullptr);
    if (c < 0) return;
    const std::string payload(static_cast<size_t>(down), 'd');
    char byte = 'a';
    (void)(ReadExactly(c, up) && SendAll(c, {&byte, 1}) && ReadExactly(c, 1) &&
           SendAll(c, payload));
    ::close(c);
  });
  absl::StatusOr<std::unique_ptr<ShapingProxy>> proxy = ShapingProxy::Start(
      "127.0.0.1", far->port, ShapingOptions::FromProfile(link));
  absl::StatusOr<LinkCheck> result = absl::UnavailableError(
      absl::StrCat("link check of ", link.name,
                   ": the connection through the emulator "
                   "failed"));
  const int fd = proxy.ok() ? Connect("127.0.0.1", (*proxy)->port()) : -1;
  if (fd >= 0) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const std::string payload(static_cast<size_t>(up), 'u');
    char byte = 'r';
    const Clock::time_point t0 = Clock::now();
    const bool uploaded = SendAll(fd, payload) && ReadExactly(fd, 1);
    const Clock::time_point t1 = Clock::now();
    const bool downloaded =
        uploaded && SendAll(fd, {&byte, 1}) && ReadExactly(fd, down);
    const Clock::time_point t2 = Clock::now();
    if (downloaded) {
      const double rtt = absl::ToDoubleSeconds(link.rtt);
      auto check = [&](double measured, int64_t bytes, bool uplink,
                       double* achieved_mbps) {
        const double ideal =
            absl::ToDoubleSeconds(IdealTransferTime(link, bytes, uplink));
        *achieved_mbps =
            8e-6 * static_cast<double>(bytes) / std::max(measured - rtt, 1e-9);
        return std::abs(measured - ideal) / ideal;
      };
      LinkCheck c;
      c.link = link.name;
      c.bytes_up = up;
      c.bytes_down = down;
      c.uplink_mbps = link.uplink_mbps;
      c.downlink_mbps = link.downlink_mbps;
      c.max_error =
          std::max(check(std::chrono::duration<double>(t1 - t0).count(), up,
                         true, &c.achieved_uplink_mbps),
                   check(std::chrono::duration<double>(t2 - t1).count(), down,
                         false, &c.achieved_downlink_mbps));
      result = c;
    }
  }
  if (fd >= 0) ::close(fd);
  // Unblocks the peer's accept if no connection came.
  ::shutdown(far->fd, SHUT_RDWR);
  peer.join();
  ::close(far->fd);
  if (!proxy.ok()) return proxy.status();
  return result;
}

ShapingProxy::ShapingProxy(std::string host, int target_port,
                           ShapingOptions options, int listen_fd, int port)
    : target_host_(std::move(host)),
      target_port_(target_port),
      options_(options),
      listen_fd_(listen_fd),
      port_(port) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

ShapingProxy::~ShapingProxy() {
  stopping_ = true;
  acceptor_.join();
  ::close(listen_fd_);
  absl::MutexLock lock(&mu_);
  connections_.clear();
}

void ShapingProxy::AcceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int target = Connect(target_host_, target_port_);
    if (target < 0) {
      ::close(client);
      continue;
    }
    for (int fd : {client, target}) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    std::vector<std::unique_ptr<Connection>> done;
    absl::MutexLock lock(&mu_);
    // Reap connections closed in both directions (joined outside the lock).
    for (auto& c : connections_) {
      if (c->finished()) done.push_back(std::move(c));
    }
    connections_.erase(
        std::remove(connections_.begin(), connections_.end(), nullptr),
        connections_.end());
    connections_.push_back(std::make_unique<Connection>(
        client, target, options_, &bytes_up_, &bytes_down_));
  }
}

void ShapingProxy::CutAll() {
  std::vector<std::unique_ptr<Connection>> cut;
  {
    absl::MutexLock lock(&mu_);
    cut.swap(connections_);
  }
  cut.clear();  // Outside the lock: joining the pipes' threads takes a moment.
}

}  // namespace fedge::transport
