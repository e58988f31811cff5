#!/usr/bin/env bash
# What ferry's live Redmine tests need on an instance that
# ../shared/redmine/redmine-server.sh started, beyond its project 'sup': the custom
# fields the tracker contract writes (Labels, Severity, Customer) and the admin
# as a project member, so that issues can be assigned to it. Redmine's REST API
# cannot create custom fields, so this runs inside Redmine (rails runner), as an
# administrator would click them together once.
#
#   scripts/redmine-test-setup.sh NAME [PROJECT...]
set -euo pipefail
name=${1:?instance name}
shift
projects=${*:-sup}
cd /usr/share/redmine
RAILS_ENV=production REDMINE_INSTANCE=$name bundle exec rails runner "
  fields = { 'Labels' => 'string', 'Customer' => 'string', 'Severity' => 'int' }
  fields.each do |name, format|
    next if IssueCustomField.find_by(name: name)
    IssueCustomField.create!(name: name, field_format: format, is_for_all: true,
      is_filter: true, searchable: true, tracker_ids: Tracker.pluck(:id))
  end
  admin = User.find_by_login('admin')
  manager = Role.find_by(name: 'Manager')
  %w[$projects].each do |identifier|
    project = Project.find_by(identifier: identifier) ||
      Project.create!(name: identifier, identifier: identifier, tracker_ids: Tracker.pluck(:id), is_public: false)
    next if Member.find_by(project: project, user: admin)
    Member.create!(project: project, principal: admin, roles: [manager])
  end
" >/dev/null
