#include "seal/seal.h"

#include "crypto/aead.h"
#include "crypto/shamir.h"

namespace trellis::secrets {

void Seal::knowStoreRoot(std::string check) {
  std::unique_lock lock(mu_);
  store_check_ = std::move(check);
}

Result<std::vector<SecureBuffer>> Seal::init(
    int shares, int threshold, const std::function<Status(std::string_view check)>& persist) {
  std::unique_lock lock(mu_);
  if (!store_check_.empty()) {
    return Status::conflict("the secrets store is already initialized (root key " + store_check_ +
                            "); its shares were shown once, when it was made");
  }
  SecureBuffer root = randomBytes(aead::kKeyBytes);
  if (root.empty()) return Status::internal("the random generator failed");
  auto parts = shamir::split(root, shares, threshold);
  if (!parts) return parts.status();
  const std::string check = rootCheck(root);
  if (Status s = persist(check); !s) return s;
  std::vector<SecureBuffer> out;
  for (auto& part : *parts) out.push_back(encodeShare({threshold, check, std::move(part)}));
  store_check_ = check;
  root_check_ = check;
  pending_.clear();
  return out;  // `root` is wiped here: the shares are now the only way back to it
}

Result<SealStatus> Seal::unseal(std::string_view share_text) {
  auto token = decodeShare(share_text);
  if (!token) return token.status();
  std::unique_lock lock(mu_);
  if (!root_.empty()) {
    return Status::conflict("the secrets store is already unsealed (root key " + root_check_ + ")");
  }
  if (!store_check_.empty() && token->root_check != store_check_) {
    return Status::invalid("this share belongs to root key " + token->root_check +
                           ", but this store was initialized with root key " + store_check_ +
                           "; progress kept");
  }
  if (!pending_.empty()) {
    const ShareToken& first = pending_.front();
    if (token->root_check != first.root_check || token->threshold != first.threshold) {
      return Status::invalid("this share belongs to root key " + token->root_check +
                             " (threshold " + std::to_string(token->threshold) +
                             "), not to root key " + first.root_check + " (threshold " +
                             std::to_string(first.threshold) +
                             ") of the shares given so far; progress kept");
    }
    for (const ShareToken& given : pending_) {
      if (given.share.x == token->share.x) {
        return Status::invalid("share " + std::to_string(token->share.x) +
                               " was already given; progress kept");
      }
    }
  }
  pending_.push_back(std::move(*token));
  if (static_cast<int>(pending_.size()) < pending_.front().threshold) return statusLocked();

  std::vector<shamir::Share> shares;
  for (const ShareToken& t : pending_) shares.push_back({t.share.x, t.share.y.clone()});
  const std::string expected = pending_.front().root_check;
  pending_.clear();
  auto root = shamir::combine(shares);
  if (!root) return root.status();
  if (!equalConstantTime(rootCheck(*root), expected)) {
    return Status::invalid(
        "the shares do not combine to root key " + expected +
        ": at least one of them was altered; progress reset, start again with intact shares");
  }
  root_ = std::move(*root);
  root_check_ = expected;
  return statusLocked();
}

SealStatus Seal::reset() {
  std::unique_lock lock(mu_);
  pending_.clear();
  return statusLocked();
}

Seal::~Seal() {
  std::unique_lock lock(mu_);
  root_.wipe();
  pending_.clear();
}

void Seal::seal() {
  {
    std::unique_lock lock(mu_);
    root_.wipe();
    pending_.clear();
    epoch_.fetch_add(1, std::memory_order_acq_rel);
  }
  for (const auto& forget : listeners_) forget();
}

SealStatus Seal::status() const {
  std::shared_lock lock(mu_);
  return statusLocked();
}

bool Seal::sealed() const {
  std::shared_lock lock(mu_);
  return root_.empty();
}

SealStatus Seal::statusLocked() const {
  SealStatus s;
  s.sealed = root_.empty();
  s.initialized = !store_check_.empty();
  if (!pending_.empty()) {
    s.threshold = pending_.front().threshold;
    s.progress = static_cast<int>(pending_.size());
    s.root_check = pending_.front().root_check;
  } else {
    s.root_check = root_check_;
  }
  return s;
}

Status Seal::withRoot(
    const std::function<Status(const SecureBuffer&, std::string_view)>& use) const {
  std::shared_lock lock(mu_);
  if (root_.empty()) return Status::unavailable(std::string(kSealedMessage));
  return use(root_, root_check_);
}

}  // namespace trellis::secrets
