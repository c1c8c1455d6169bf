#pragma once

// What a deployment changed in the kernel's group, entry by entry, and how a rollback
// undoes only that (issue 15, "Failure and rollback" in README.md): every change the
// runner makes is a compare-and-set of the group it read, so the entries that differ
// between that group and the one then in force are the deployment's own. A rollback puts
// those back, on the group in force then, to what they were before the deployment's first
// change of each, and leaves everything else (an operator's edit, a Greengrass v1
// deployment made meanwhile) as it is. Pure: no I/O, so the unit suite calls it directly.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

#include "grove/group.pb.h"

namespace grove::deployment {

/// The changes a deployment made to the group (see the file comment).
class group_changes {
public:
  /// Records one change: `read`, the group it was computed on, and `set`, the group the
  /// kernel put in force from it. An entry's first recorded state is its "before", its
  /// last its "after". When another change altered an entry between two of the
  /// deployment's (`read` differs from the recorded "after"), "before" becomes what
  /// `read` has. An entry back where it started (added then removed) is forgotten.
  void record(const group::Group& read, const group::Group& set);

  /// Records a change whose answer never came (a timeout: the kernel may or may not have
  /// applied it): `read`, the group it was computed on, `intended`, the group it asked
  /// for, and `now`, the group in force read afterwards. The change counts as applied when
  /// `now` has every entry it meant to change as `intended` does and, unless `restarted`,
  /// the group's version moved on since `read` (a set applies whole or not at all: only
  /// some entries as asked are another change's); then recorded as record() does.
  /// `restarted`: `now` was read after a restart of groved, whose group versions begin
  /// again at 1, so the version says nothing. Returns how many entries it recorded (0 or
  /// all), `meant` how many the change meant.
  size_t record_if_applied(const group::Group& read, const group::Group& intended,
                           const group::Group& now, size_t* meant = nullptr,
                           bool restarted = false);

  /// A change about to be set, journaled before the set (to_json keeps it) so that a
  /// restart after `kill -9` can tell whether the kernel applied it: `read`, the group it
  /// was computed on, and `document`, what it sets. Only what a decision needs is kept:
  /// the read's version and the entries the change means, before (`read`'s) and after
  /// (the document's as the kernel reads it, grove::parse_group; none when it refuses
  /// the document). record() and settle() end it.
  void intend(const group::Group& read, std::string document);

  /// The change intend() announced and nothing ended yet.
  bool pending() const;

  /// The pending change alone, without the recorded ones (what a start decides of a
  /// settled deployment's journal: its recorded changes were undone or kept already).
  group_changes pending_part() const;

  /// Forgets the pending change (the kernel refused it: nothing changed).
  void forget_pending();

  /// Ends the pending change with `now`, the group in force read after it (a timeout, or
  /// a restart: `restarted`): its meant entries go to record_if_applied. A document the
  /// kernel cannot read was refused: nothing recorded. Returns what record_if_applied
  /// returns.
  size_t settle(const group::Group& now, bool restarted, size_t* meant = nullptr);

  /// No entry changed.
  bool empty() const;

  /// How many entries (functions, resources, subscriptions) changed.
  size_t size() const;

  /// What undoing the changes on `now` (the group in force) gives: each changed entry
  /// still as the deployment left it goes back to its state before (removed when it was
  /// added, put back when it was removed); one changed again by someone else since keeps
  /// that version (named in `notes`); untouched entries stay as `now` has them. A
  /// subscription left naming a function or device the result lacks is dropped (named
  /// in `notes`): the kernel refuses a group holding one. `kept` gets the names of the
  /// functions and ids of the resources left at another party's version; a subscription
  /// the deployment removed that names such a function stays out (named in `notes`).
  /// `undone` (optional) gets how many entries were actually put back as they were.
  group::Group undo(const group::Group& now, std::vector<std::string>& notes,
                    std::vector<std::string>& kept, size_t* undone = nullptr) const;

  /// The changes as JSON (each entry's before and after, base64 where binary), for the
  /// deployment's journal: a rollback after `kill -9` undoes them (from_json).
  nlohmann::json to_json() const;

  /// What to_json() wrote; an error for anything else, but for a malformed pending
  /// change: that alone is dropped (the recorded changes still matter to a rollback) and
  /// `dropped` (optional) gets why.
  static caf::expected<group_changes> from_json(const nlohmann::json& j,
                                                std::string* dropped = nullptr);

  /// An entry before the deployment's first change of it (serialized) and after its last
  /// (its content: a config compared as JSON, not as spelled); nullopt: not in the group.
  struct change {
    /// Before.
    std::optional<std::string> before;
    /// After.
    std::optional<std::string> after;
  };

private:
  // By function name, resource id, subscription id.
  std::map<std::string, change> functions_, resources_, subscriptions_;
  // intend(): the entries the change means, before (with the read's version) and after.
  std::optional<std::pair<group::Group, group::Group>> pending_;
};

/// `g` as a group document (YAML) for `$grove/group/set`.
caf::expected<std::string> group_yaml(const group::Group& g);

} // namespace grove::deployment
