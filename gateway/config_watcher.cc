#include "gateway/config_watcher.h"

#include <sys/stat.h>

#include "absl/time/time.h"
#include "gateway/config.h"
#include "gateway/hash.h"

namespace switchyard::gateway {

ConfigWatcher::ConfigWatcher(std::string path, std::vector<std::string> sources,
                             std::string initial_version, std::chrono::milliseconds period,
                             std::function<void(ConfigWatcher&)> on_change)
    : path_(std::move(path)),
      period_(period),
      on_change_(std::move(on_change)),
      sources_(std::move(sources)),
      version_(std::move(initial_version)),
      thread_([this] { Run(); }) {}

ConfigWatcher::~ConfigWatcher() {
  stop_.Notify();
  thread_.join();
}

void ConfigWatcher::Watch(std::vector<std::string> sources, std::string version) {
  absl::MutexLock lock(&mu_);
  sources_ = std::move(sources);
  version_ = std::move(version);
}

namespace {

bool SameStatus(const struct stat& a, const struct stat& b) {
  return a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_size == b.st_size && a.st_ino == b.st_ino;
}

}  // namespace

void ConfigWatcher::Run() {
  // Zeros, so the first poll reads the files: an edit made between loading the config and this
  // thread's start is still seen (the content hash decides whether anything changed).
  std::vector<struct stat> last;
  bool settling = false;
  while (!stop_.WaitForNotificationWithTimeout(absl::FromChrono(period_))) {
    std::vector<std::string> files = {path_};
    {
      absl::MutexLock lock(&mu_);
      files.insert(files.end(), sources_.begin(), sources_.end());
    }
    std::vector<struct stat> now(files.size());
    bool missing = false;
    for (size_t i = 0; i < files.size(); ++i) {
      missing = missing || stat(files[i].c_str(), &now[i]) != 0;
    }
    if (missing) continue;  // mid-rename: look again next period
    bool same = now.size() == last.size();
    for (size_t i = 0; same && i < now.size(); ++i) same = SameStatus(now[i], last[i]);
    if (!same) {
      // Read only once the files have been quiet for a period, never halfway through a write.
      last = std::move(now);
      settling = true;
      continue;
    }
    if (!settling) continue;
    settling = false;
    // A file that cannot be read hashes its error: the reload then says what is wrong.
    std::vector<std::string> hashes;
    for (const std::string& file : files) {
      absl::StatusOr<std::string> text = ReadConfigSource(file);
      hashes.push_back(ContentHash(text.ok() ? *text : text.status().ToString()));
    }
    const std::string version = ConfigVersion(hashes);
    {
      absl::MutexLock lock(&mu_);
      if (version == version_) continue;
      version_ = version;
    }
    on_change_(*this);
  }
}

}  // namespace switchyard::gateway
