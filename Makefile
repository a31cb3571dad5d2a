# SPDX-License-Identifier: Apache-2.0
# mod_cptoken: build, test, install.
#   make            build/cptoken, build/mod_cptoken.so, build/mod_cptoken_manager.so, build/libcptoken.a
#   make test       install missing Debian packages, build, run every test
#   make browser-test  the Manage API Tokens page in Debian's chromium (t/browser/)
#   make cluster-test  the etcd client against a real 3-member etcd (t/cluster/)
#   make cluster-test-current  the same tests against etcd 3.7.3 built with Go (t/cluster/etcd-current/)
#   make cluster-test-3.6      and against etcd 3.6.16 (t/cluster/etcd-3.6/)
#   make cluster-test-3.5      and against etcd 3.5.36 (t/cluster/etcd-3.5/)
#   make install    tool to $(SBINDIR), module to apxs' LIBEXECDIR, man pages, bash completion, the page
#   make uninstall  removes exactly what install put
#   make deb        the Debian package, in $(BUILD)/deb/ (docs/package.md)
#   make deb-test   installs it into a clean Debian 12 root and tries it there
# C++ is compiled and linked with g++: apxs cannot build C++, so it only
# tells us where httpd's headers and modules are.

APXS      ?= apxs
CXX       ?= g++
BUILD     ?= build
PREFIX    ?= /usr/local
SBINDIR   ?= $(PREFIX)/sbin
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# httpd's module directory, asked of apxs only when installing.
MODULEDIR ?= $(shell $(APXS) -q LIBEXECDIR)
PYTHON    ?= /usr/bin/python3
VERSION   := $(shell cat VERSION)

# Debian packages the build and the tests need; `make deps` installs the missing ones. The tests
# only run fail2ban-regex: a fail2ban daemon that installing it started (Debian enables an sshd jail)
# is stopped and disabled again, not left banning addresses on a build machine. Likewise the etcd
# that installing etcd-server starts: the cluster tests run private members on ports of their own.
# The browser tests (t/browser/) need chromium and fonts-liberation, and Node with npm: Debian's
# nodejs and npm are installed only when no `node` or `npm` is on the PATH (a newer Node from
# elsewhere provides npm itself, and Debian's npm package would conflict with it); then
# `npm ci` installs playwright-core as package-lock.json pins it.
DEB_PACKAGES := g++ make pkg-config apache2-dev apache2-bin liblmdb-dev lmdb-utils \
                libssl-dev libcmocka-dev nlohmann-json3-dev libcli11-dev \
                python3-pytest curl clang libclang-rt-14-dev apache2-utils openssl \
                wrk libbenchmark-dev valgrind fail2ban libfaketime python3-lmdb python3-pytest-xdist go-md2man \
                debhelper dpkg-dev fakeroot lintian debootstrap groff-base \
                etcd-server etcd-client libcurl4-openssl-dev libsimdjson-dev
# The browser's packages, without what Debian recommends beside them (avahi-daemon, a desktop's
# helpers): a headless test needs none of it.
BROWSER_PACKAGES := chromium fonts-liberation media-types

CXXSTD    := -std=c++20
WARN      := -Wall -Wextra -Wshadow -Wno-missing-field-initializers
HARDEN    := -fstack-protector-strong -D_FORTIFY_SOURCE=2
OPT       ?= -O2 -g
CXXFLAGS  += $(CXXSTD) $(OPT) $(WARN) $(HARDEN) -fPIC -fvisibility=hidden -DCPTOKEN_VERSION='"$(VERSION)"'
ifdef SANITIZE
CXXFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS   += -fsanitize=address,undefined
endif
LIBS      := -llmdb -lcrypto

# Only read from apxs when the module is built: `make deps` must work before apache2-dev exists.
HTTPD_CPPFLAGS = -I$(shell $(APXS) -q INCLUDEDIR) -I$(shell $(APXS) -q APR_INCLUDEDIR) \
                 $(shell $(APXS) -q EXTRA_CPPFLAGS)

# lib/cluster/ (the etcd client) needs libcurl and simdjson (etcd's answers): it is an
# archive of its own, so that the module, the fuzz targets and the benchmarks, which link
# libcptoken.a, never depend on them. Only what talks to etcd (cptoken, the manager's
# build, the cluster tests) links $(CLUSTER_LIBS).
CLUSTER_SRCS := $(wildcard lib/cluster/*.cpp)
CLUSTER_OBJS := $(CLUSTER_SRCS:%.cpp=$(BUILD)/%.o)
CLUSTER_LIBS := $(BUILD)/libcptoken_cluster.a -lcurl -lsimdjson
LIB_SRCS  := $(filter-out $(CLUSTER_SRCS),$(wildcard lib/*/*.cpp))
LIB_OBJS  := $(LIB_SRCS:%.cpp=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard t/unit/test_*.cpp)
UNIT_BINS := $(UNIT_SRCS:t/unit/%.cpp=$(BUILD)/t/%)

.PHONY: all deps test unit unit-asan tool-test httpd-test install uninstall clean man
all: $(BUILD)/libcptoken.a $(BUILD)/cptoken $(BUILD)/mod_cptoken.so $(BUILD)/mod_cptoken_manager.so man

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  case " $$missing " in *" fail2ban "*) if [ -d /run/systemd/system ]; then \
	    systemctl disable --now --quiet fail2ban.service || echo "could not stop fail2ban.service" >&2; fi;; esac; \
	  case " $$missing " in *" etcd-server "*) if [ -d /run/systemd/system ]; then \
	    systemctl disable --now --quiet etcd.service || echo "could not stop etcd.service" >&2; \
	  elif [ -x /etc/init.d/etcd ]; then \
	    /etc/init.d/etcd stop >/dev/null 2>&1; update-rc.d etcd disable >/dev/null 2>&1 || true; fi;; esac; \
	fi
	@missing=$$(for p in $(BROWSER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@$(MAKE) --no-print-directory -s node_modules/.package-lock.json

# playwright-core for t/browser/, exactly as package-lock.json pins it (npm ci
# downloads no browser: the tests drive Debian's /usr/bin/chromium).
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -MMD -MP -Ilib -c -o $@ $<

# The objects that print or log CPTOKEN_VERSION follow the VERSION file.
$(BUILD)/cptoken.o $(BUILD)/mod_cptoken.o $(BUILD)/lib/store/store.o: VERSION

$(BUILD)/libcptoken.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libcptoken_cluster.a: $(CLUSTER_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/cptoken: $(BUILD)/cptoken.o $(BUILD)/libcptoken_cluster.a $(BUILD)/libcptoken.a
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -o $@ $^ -lcurl -lsimdjson $(LIBS)

# The module: only cptoken_module is exported; ap_*/apr_* resolve from httpd at load time.
# mod_cptoken.cpp authenticates; mod_cptoken_manager.cpp is the manager's handler (SetHandler cptoken-manager),
# mod_cptoken_status.cpp the health check of a mirror of etcd (SetHandler cptoken-status).
# Two builds differ in one object (mod_cptoken_etcd.hpp): mod_cptoken.so, the front-ends', has no
# etcd client; mod_cptoken_manager.so, the manager instance's, links lib/cluster and libcurl for
# CPTokenEtcd.
MODULE_OBJS := $(BUILD)/mod_cptoken.o $(BUILD)/mod_cptoken_manager.o $(BUILD)/mod_cptoken_status.o
$(MODULE_OBJS) $(BUILD)/mod_cptoken_no_etcd.o $(BUILD)/mod_cptoken_etcd.o: CPPFLAGS += $(HTTPD_CPPFLAGS)
$(BUILD)/mod_cptoken.so: $(MODULE_OBJS) $(BUILD)/mod_cptoken_no_etcd.o $(BUILD)/libcptoken.a mod_cptoken.map
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -shared -Wl,--version-script=mod_cptoken.map \
	  -o $@ $(MODULE_OBJS) $(BUILD)/mod_cptoken_no_etcd.o $(BUILD)/libcptoken.a $(LIBS)
$(BUILD)/mod_cptoken_manager.so: $(MODULE_OBJS) $(BUILD)/mod_cptoken_etcd.o $(BUILD)/libcptoken_cluster.a \
                                 $(BUILD)/libcptoken.a mod_cptoken.map
	$(CXX) $(CXXFLAGS) $(LDFLAGS) -shared -Wl,--version-script=mod_cptoken.map \
	  -o $@ $(MODULE_OBJS) $(BUILD)/mod_cptoken_etcd.o $(CLUSTER_LIBS) $(BUILD)/libcptoken.a $(LIBS)

$(BUILD)/t/%: t/unit/%.cpp $(BUILD)/libcptoken.a
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(LDFLAGS) -MMD -MP -Ilib -o $@ $< $(BUILD)/libcptoken.a $(LIBS) -lcmocka

# The etcd client's unit tests (the stem is shorter than the rule above's, so make picks this one).
$(BUILD)/t/test_etcd_%: t/unit/test_etcd_%.cpp $(BUILD)/libcptoken_cluster.a $(BUILD)/libcptoken.a
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(LDFLAGS) -MMD -MP -Ilib -o $@ $< $(CLUSTER_LIBS) $(BUILD)/libcptoken.a $(LIBS) -lcmocka

# The cluster tests (t/cluster/): a real 3-member etcd per test (Debian's etcd-server
# 3.4.23, t/cluster/etcd_cluster.py), the etcd client driven through etcd_probe, and
# the mirror agent (build/cptoken sync; its tests share a cluster per worker).
# About 2.5 minutes on the 2-core VM with 2 workers (most of it a few tests that measure
# for tens of seconds), so a stage of make test.
# The "etcd-client:" lines it prints at the end are measurements (race, paginated
# read, failover, watchdog, latency); CLUSTER_WORKERS=0 runs serially, for quieter numbers.
CLUSTER_WORKERS ?= 2
CLUSTER_MEASUREMENTS = $(abspath $(BUILD))/test-logs/etcd-client.txt
.PHONY: cluster-test
$(BUILD)/t/etcd_probe: t/cluster/etcd_probe.cpp $(BUILD)/libcptoken_cluster.a $(BUILD)/libcptoken.a
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(LDFLAGS) -MMD -MP -Ilib -o $@ $< $(CLUSTER_LIBS) $(BUILD)/libcptoken.a $(LIBS) -lpthread
# The front-end tests (t/cluster/frontends.py) run the tool and the module too: without them
# as prerequisites, make cluster-test in a fresh checkout fails on a missing build/cptoken.
cluster-test: $(BUILD)/t/etcd_probe $(BUILD)/cptoken $(BUILD)/mod_cptoken.so $(BUILD)/mod_cptoken_manager.so
	@mkdir -p $(dir $(CLUSTER_MEASUREMENTS)) && rm -f $(CLUSTER_MEASUREMENTS)
	ETCD_PROBE=$(abspath $(BUILD)/t/etcd_probe) ETCD_MEASUREMENTS=$(CLUSTER_MEASUREMENTS) \
	  CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  $(PYTHON) -m pytest -q $(if $(filter-out 0,$(CLUSTER_WORKERS)),-n $(CLUSTER_WORKERS)) t/cluster
	@sort $(CLUSTER_MEASUREMENTS)

# The same tests against a current etcd: Debian 12's 3.4.23 is end of life, front-ends
# in the field run 3.6 or newer. t/cluster/etcd-current/ pins etcd, etcdctl and etcdutl
# (3.7.3) in go.mod and go.sum; they are built only when missing or when one of those
# files changed; etcd 3.7.3 needs Go 1.26 or newer. go fetches the modules from the Go
# module proxy into the default module cache (go env GOMODCACHE: ~200 MB) and compiles into
# the default build cache (go env GOCACHE: ~350 MB), both outside $(BUILD): 1.5 minutes the
# first time on 2 cores, and make clean or a fresh clone on a machine that built it once
# costs only the link, about a second. The binaries go to $(BUILD)/etcd-current/ and are picked
# by t/cluster/etcd_cluster.py through CPTOKEN_TEST_ETCD (etcdctl and etcdutl beside it).
# GO_BUILD_FLAGS: e.g. -p=1 on a busy machine.
# A machine of this kind has Go in /usr/local/go, not always on PATH.
GO ?= $(or $(shell command -v go),/usr/local/go/bin/go)
GO_BUILD_FLAGS ?=
# t/cluster/etcd-3.6/ pins 3.6.16 the same way (its main.go is etcd-current's), and
# t/cluster/etcd-3.5/ 3.5.36 (likewise; 3.5's etcdmain has the same Main): the two lines
# the docs recommend for production. NAME below is current, 3.6 or 3.5.
.PHONY: etcd-current etcd-3.6 etcd-3.5 cluster-test-current cluster-test-3.6 cluster-test-3.5
etcd-current etcd-3.6 etcd-3.5: etcd-%: $(BUILD)/etcd-%/etcd
# GOWORK=off: a go.work above the checkout must not change what is built; -trimpath keeps
# the checkout's path out of the binaries. touch: go leaves an up-to-date binary as it was.
# (A pattern rule's targets are made together, by one run of its recipe.)
$(BUILD)/etcd-%/etcd $(BUILD)/etcd-%/etcdctl $(BUILD)/etcd-%/etcdutl: \
    t/cluster/etcd-%/main.go t/cluster/etcd-%/go.mod t/cluster/etcd-%/go.sum
	@mkdir -p $(@D)
	cd t/cluster/etcd-$* && GOWORK=off $(GO) build -trimpath $(GO_BUILD_FLAGS) -o $(abspath $(@D))/etcd . \
	  && GOWORK=off $(GO) build -trimpath $(GO_BUILD_FLAGS) -o $(abspath $(@D))/ \
	       go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/etcdutl/v3
	@touch $(@D)/etcd $(@D)/etcdctl $(@D)/etcdutl
# make cluster-test against build/etcd-NAME/etcd. Its measurements go to a file of their
# own, beside make cluster-test's. The version is printed last as well, pass or fail:
# pytest's report is long.
cluster-test-current cluster-test-3.6 cluster-test-3.5: cluster-test-%: $(BUILD)/t/etcd_probe $(BUILD)/cptoken $(BUILD)/mod_cptoken.so \
    $(BUILD)/mod_cptoken_manager.so $(BUILD)/etcd-%/etcd $(BUILD)/etcd-%/etcdctl $(BUILD)/etcd-%/etcdutl
	@bin=$(BUILD)/etcd-$*; version="$$($$bin/etcd --version | head -1), $$($$bin/etcdctl version | head -1)"; \
	echo "$@: $$version"; \
	CPTOKEN_TEST_ETCD=$(abspath $(BUILD)/etcd-$*/etcd) $(MAKE) --no-print-directory cluster-test \
	  CLUSTER_MEASUREMENTS=$(abspath $(BUILD))/test-logs/etcd-client-$*.txt; rc=$$?; \
	echo "$@: ran against $$version"; exit $$rc

# Manual pages, from the docs they print (go-md2man): cptoken(8) from
# docs/cptoken.md, mod_cptoken(8) from docs/directives.md. Their date is the
# package's (SOURCE_DATE_EPOCH, as dpkg-buildpackage sets it) or today.
MAN_DATE := $(shell date -u -d @$${SOURCE_DATE_EPOCH:-$$(date +%s)} +'%B %Y')
MAN_PAGES := $(BUILD)/man/cptoken.8 $(BUILD)/man/mod_cptoken.8
# A text line that starts with a dot ("...") or an apostrophe ("'--expires'?") would be read as a
# control line: go-md2man leaves them; its own macros start with a dot and a letter.
MAN_ESCAPE_DOTS := sed -e 's/^\.\([^A-Za-z\\]\)/\\\&.\1/' -e "s/^'/\\\\\&'/"
man: $(MAN_PAGES)
# Links become their text (or the installed path), tables definition lists: build-aux/md-for-man.py.
MD_FOR_MAN := $(PYTHON) build-aux/md-for-man.py
$(BUILD)/man/cptoken.8: docs/cptoken.md VERSION build-aux/md-for-man.py
	@mkdir -p $(dir $@)
	( echo '% CPTOKEN 8 "$(MAN_DATE)" "mod_cptoken $(VERSION)" "System Administration"'; \
	  tail -n +2 $< ) | $(MD_FOR_MAN) | go-md2man | $(MAN_ESCAPE_DOTS) > $@
$(BUILD)/man/mod_cptoken.8: docs/directives.md VERSION build-aux/md-for-man.py
	@mkdir -p $(dir $@)
	( echo '% MOD_CPTOKEN 8 "$(MAN_DATE)" "mod_cptoken $(VERSION)" "System Administration"'; \
	  printf '# NAME\n\nmod_cptoken - Apache httpd module that admits requests with cPanel-style API tokens\n\n'; \
	  tail -n +2 $< ) | $(MD_FOR_MAN) | go-md2man | $(MAN_ESCAPE_DOTS) > $@

# Built with the caller's -j, then run TEST_WORKERS at a time: several of
# them mostly wait (for a lock's timeout, a paused reader), so more than the
# cores. -O keeps each binary's output together, as when they ran in turn.
# test_live_store runs alone, after the others: its inotify watch covers
# every directory on its path, /tmp too, where the others make and remove
# their directories, and it asserts that nothing happened there.
UNIT_ALONE := $(filter %/test_live_store,$(UNIT_BINS))
unit: $(UNIT_BINS)
	@$(MAKE) --no-print-directory -j$(TEST_WORKERS) -O $(filter-out $(UNIT_ALONE:%=%.run),$(UNIT_BINS:%=%.run))
	@$(if $(UNIT_ALONE),$(MAKE) --no-print-directory $(UNIT_ALONE:%=%.run),true)
.PHONY: $(UNIT_BINS:%=%.run)
$(UNIT_BINS:%=%.run): %.run: %
	@echo "== $<"; $<

# The same unit tests under AddressSanitizer and UBSan, in their own build
# tree (shared with leak-test and httpd-asan-test). Run by .ci/run after make
# test: building everything a second time with ASan takes about two minutes,
# more than make test's 8 have room for.
unit-asan:
	$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SANITIZE=1 OPT="-O1 -g" unit

# The tool's tests with cptoken built under AddressSanitizer: a leak
# (LeakSanitizer) or any other report fails the test (t/tool/conftest.py). Run by .ci/run after
# make test (about a minute: too long for make test's 8). verify_asan_link_order=0:
# a few tests preload libfaketime.
leak-test:
	$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SANITIZE=1 OPT="-O1 -g" $(BUILD)/asan/cptoken man
	ASAN_OPTIONS=detect_leaks=1:exitcode=23:verify_asan_link_order=0 CPTOKEN=$(abspath $(BUILD)/asan/cptoken) \
	  $(PYTHON) -m pytest -q -n $(TEST_WORKERS) t/tool

# The real-httpd tests, then a 30-second soak of each MPM (side by side),
# with the module built under AddressSanitizer and UBSan, the runtime
# preloaded into httpd (and libstdc++, so that ASan finds __cxa_throw: httpd
# itself is C): any report in a log fails (t/httpd/conftest.py). Leaks are
# not checked here (httpd frees its pools wholesale at exit: see
# module-leak-test). Run by .ci/run after make test.
HTTPD_ASAN_ENV = CPTOKEN_HTTPD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so.6)" \
  ASAN_OPTIONS=detect_leaks=0
httpd-asan-test: all
	$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SANITIZE=1 OPT="-O1 -g" $(BUILD)/asan/mod_cptoken.so \
	  $(BUILD)/asan/mod_cptoken_manager.so
	$(HTTPD_ASAN_ENV) CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/asan/mod_cptoken.so) \
	  $(PYTHON) -m pytest -q -n $(TEST_WORKERS) t/httpd
	$(HTTPD_ASAN_ENV) $(MAKE) --no-print-directory stress-smoke STRESS_SMOKE_SECONDS=30 \
	  STRESS_MODULE=$(BUILD)/asan/mod_cptoken.so TEST_LOGS=$(BUILD)/test-logs/asan

# The module under Valgrind in a real httpd (t/leak/module_leaks.py, whose
# docstring says how): one httpd process (apache2 -X, prefork) with the
# normally built module walks every path the module has per request and per
# child (admissions and each refusal, scopes, redirects and subrequests,
# last-used recording, a store directory swapped under it), then a
# manager instance walks the manager's handler likewise; each is
# stopped with SIGTERM, and any definitely or indirectly lost block, or any
# other Valgrind error, with a frame in mod_cptoken.so fails; leaks of
# httpd itself are counted, not failed. About 16 s; run by .ci/run.
# LEAK_ROUNDS repeats the workload more, LEAK_KEEP=1 keeps the logs.
.PHONY: module-leak-test
module-leak-test: all
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  $(PYTHON) t/leak/module_leaks.py

# Black-box tests with pytest: the tool as a user runs it, and a real httpd
# (every MPM) with the built module, driven by curl.
PYTEST = CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) $(PYTHON) -m pytest -q
tool-test: $(BUILD)/cptoken
	$(PYTEST) t/tool
httpd-test: all
	$(PYTEST) t/httpd

# The Manage API Tokens page in a real browser (t/browser/, Node's test
# runner, playwright-core and Debian's chromium) against a real manager and a
# protected location (private httpds with the built module). Screenshots and
# both servers' logs go to $(BROWSER_LOGS). page-screenshot also writes the
# README's picture of the page, docs/manager-page.png.
BROWSER_LOGS = $(abspath $(BUILD))/test-logs/browser
BROWSER_TEST = CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
               BROWSER_LOGS=$(BROWSER_LOGS) node --test t/browser/manager.test.js
.PHONY: browser-test page-screenshot
browser-test: all node_modules/.package-lock.json
	@rm -rf $(BROWSER_LOGS)
	$(BROWSER_TEST)
page-screenshot: all node_modules/.package-lock.json
	@rm -rf $(BROWSER_LOGS)
	CPTOKEN_PAGE_SHOT=$(abspath docs/manager-page.png) $(BROWSER_TEST)

# make test prints one line per stage; a stage that fails prints the end of
# its log (all of it in $(BUILD)/test-logs/). Builds use every core.
NPROC := $(shell nproc 2>/dev/null || echo 1)
# pytest workers (pytest-xdist): the tests mostly wait for httpd and the tool,
# so twice the cores (t/httpd: 200 s serial, 55 s with 4 on 2 cores).
TEST_WORKERS ?= $(shell echo $$(( $(NPROC) * 2 )))
STAGE = @t/stage.sh
TEST_LOGS = $(BUILD)/test-logs
test: deps
	@runuser -u nobody -- test -r $(CURDIR)/Makefile || { echo "make test: the tests run the build as unprivileged users (www-data, daemon), who cannot reach $(CURDIR): give its parent directories the search bit for others (chmod o+x), or clone somewhere they can reach" >&2; exit 1; }
	$(STAGE) build $(TEST_LOGS) $(MAKE) --no-print-directory -j$(NPROC) all $(BUILD)/bench_verify
	$(STAGE) unit $(TEST_LOGS) $(MAKE) --no-print-directory -j$(NPROC) unit
	$(STAGE) fuzz $(TEST_LOGS) $(MAKE) --no-print-directory -j$(NPROC) -O fuzz FUZZ_SECONDS=5 FUZZ_SEED=1  # 10 targets of 5 s, as many at once as cores; one seed, so a failure here is one to reproduce
	$(STAGE) bench-smoke $(TEST_LOGS) $(MAKE) --no-print-directory bench-smoke
	$(STAGE) tool-test $(TEST_LOGS) env $(PYTEST) -n $(TEST_WORKERS) t/tool
	$(STAGE) httpd-test $(TEST_LOGS) env $(PYTEST) -n $(TEST_WORKERS) t/httpd
	$(STAGE) cluster-test $(TEST_LOGS) $(MAKE) --no-print-directory cluster-test
	$(STAGE) stress $(TEST_LOGS) $(MAKE) --no-print-directory stress-smoke
	$(STAGE) browser $(TEST_LOGS) $(MAKE) --no-print-directory browser-test

# What install puts, and so exactly what uninstall removes. The .load and .conf
# files for /etc/apache2 are not installed here: the package ships them as
# conffiles, and README step 5 copies them by hand.
# The manager instance's build of the module: beside httpd's modules, not among them (a2enmod
# is for the front-ends' mod_cptoken.so; conf/cptoken-manager.conf loads this one by its path).
MANAGERMODULEDIR ?= $(PREFIX)/lib/mod_cptoken
# The Manage API Tokens page, which the manager instance serves (conf/cptoken-manager.conf).
PAGEDIR   ?= $(PREFIX)/share/mod_cptoken/manager
PAGE_FILES := $(notdir $(wildcard manager/page/*))
INSTALLED := $(SBINDIR)/cptoken $(MODULEDIR)/mod_cptoken.so $(MANAGERMODULEDIR)/mod_cptoken_manager.so $(MANDIR)/man8/cptoken.8 \
             $(MANDIR)/man8/mod_cptoken.8 $(BASHCOMPDIR)/cptoken $(addprefix $(PAGEDIR)/,$(PAGE_FILES))
install: all
	install -D -m 0755 $(BUILD)/cptoken $(DESTDIR)$(SBINDIR)/cptoken
	install -D -m 0644 $(BUILD)/mod_cptoken.so $(DESTDIR)$(MODULEDIR)/mod_cptoken.so
	install -D -m 0644 $(BUILD)/mod_cptoken_manager.so $(DESTDIR)$(MANAGERMODULEDIR)/mod_cptoken_manager.so
	install -D -m 0644 $(BUILD)/man/cptoken.8 $(DESTDIR)$(MANDIR)/man8/cptoken.8
	install -D -m 0644 $(BUILD)/man/mod_cptoken.8 $(DESTDIR)$(MANDIR)/man8/mod_cptoken.8
	install -D -m 0644 conf/bash_completion/cptoken $(DESTDIR)$(BASHCOMPDIR)/cptoken
	install -d $(DESTDIR)$(PAGEDIR)
	install -m 0644 $(addprefix manager/page/,$(PAGE_FILES)) $(DESTDIR)$(PAGEDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# --one-file-system: should a killed deb-test have left its root's /proc
# mounted, rm stops there with an error instead of descending into it.
clean:
	rm -rf --one-file-system $(BUILD)

# Not the package's own build tree, nor the Debian root of deb-test.
-include $(shell find $(BUILD) \( -path $(BUILD)/deb -o -path $(BUILD)/deb-test \) -prune -o -name '*.d' -type f -print 2>/dev/null)

# The Debian package (docs/package.md). dpkg-buildpackage runs `debian/rules
# clean`, which is `make clean`: so it builds a copy of the source (what git
# tracks, plus new files it does not ignore) in $(DEB_DIR)/, never this
# checkout's build/. The .deb is remade only when one of those files changed
# (the package test in t/deb/ is not one).
# The project's tests run in make test: the package is built with nocheck
# (DEB_BUILD_OPTIONS= make deb runs the unit tests too).
DEB_DIR   := $(BUILD)/deb
DEB_BUILD_OPTIONS ?= nocheck
DEB_FILE   = $(DEB_DIR)/libapache2-mod-cptoken_$(shell dpkg-parsechangelog -S Version)_$(shell dpkg-architecture -qDEB_HOST_ARCH).deb
PKG_FILES  = $(filter-out t/deb/%,$(wildcard $(shell git ls-files --cached --others --exclude-standard 2>/dev/null || \
                                find . \( -path ./$(BUILD) -o -path ./.git \) -prune -o -type f -print)))
.PHONY: deb deb-test
deb: $(DEB_FILE)
$(DEB_FILE): $(PKG_FILES)
	@rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	@tar -cf - $^ | tar -xf - -C $(DEB_DIR)/src
	@echo "deb: dpkg-buildpackage -us -uc -b in $(DEB_DIR)/src (log: $(DEB_DIR)/build.log)"
	@cd $(DEB_DIR)/src && DEB_BUILD_OPTIONS="$(DEB_BUILD_OPTIONS)" dpkg-buildpackage -us -uc -b \
	  > ../build.log 2>&1 || { tail -20 ../build.log; \
	  echo "deb: dpkg-buildpackage failed, see $(DEB_DIR)/build.log" >&2; exit 1; }
	@echo "deb: lintian $@"
	@lintian --fail-on error $@ > $(DEB_DIR)/lintian.log; rc=$$?; cat $(DEB_DIR)/lintian.log; exit $$rc
	@echo "deb: $@"

# Installs the package into a clean Debian 12 root under $(BUILD)/deb-test
# and uses it there (t/deb/deb-test.sh). Needs root and deb.debian.org.
deb-test: $(DEB_FILE)
	@bash t/deb/deb-test.sh $(DEB_FILE) $(BUILD)/deb-test

# Benchmarks (not part of make test; a small smoke run of them is).
#   make bench        the full run: microbenchmark of one verification at
#                     1k..10M tokens, then httpd side by side with wrk; the
#                     table goes to $(BENCH_DIR)/results.md; then issue 23's
#                     table (bench/table.py: three store sizes, last used On
#                     and Off) to $(BENCH_DIR)/table.md
#   make bench-smoke  the same with tiny sizes, to check that it runs
# Sizes and durations: see bench/README.md (BENCH_* variables).
# Work directories live outside the checkout: httpd's www-data children must
# reach the stores, and a checkout may sit in a directory only root can enter.
BENCH_SIZES ?= 1000,100000,1000000,10000000
BENCH_DIR ?= /var/tmp/mod_cptoken-bench
BENCH_SMOKE_DIR ?= /var/tmp/mod_cptoken-bench-smoke
.PHONY: bench bench-micro bench-httpd bench-table bench-smoke
$(BUILD)/bench_verify: bench/bench_verify.cpp $(BUILD)/libcptoken.a
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(LDFLAGS) -MMD -MP -Ilib -o $@ $< $(BUILD)/libcptoken.a $(LIBS) -lbenchmark -lpthread
bench-micro: $(BUILD)/bench_verify
	BENCH_SIZES=$(BENCH_SIZES) BENCH_DIR=$(BENCH_DIR) $(BUILD)/bench_verify
bench-httpd: all
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  BENCH_DIR=$(BENCH_DIR) $(PYTHON) bench/httpd_bench.py
bench-table: all
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  BENCH_DIR=$(BENCH_DIR) $(PYTHON) bench/table.py
bench: deps all
	$(MAKE) --no-print-directory bench-micro
	$(MAKE) --no-print-directory bench-httpd
	$(MAKE) --no-print-directory bench-table
bench-smoke: all $(BUILD)/bench_verify
	BENCH_SIZES=1000,10000 BENCH_DIR=$(BENCH_SMOKE_DIR) $(BUILD)/bench_verify --benchmark_min_time=0.05
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  BENCH_DIR=$(BENCH_SMOKE_DIR) $(PYTHON) bench/httpd_bench.py --smoke
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  BENCH_DIR=$(BENCH_SMOKE_DIR) $(PYTHON) bench/table.py --smoke

# The cluster mode's targets (issue 24; bench/cluster_bench.py, bench/README.md
# "Cluster"): front-end throughput while the agent applies a full read of
# CBENCH_APPLY_TOKENS tokens, and a full read of CBENCH_TOKENS (1M) with the
# mirror's size after ten. A private 3-member etcd on loopback (Debian's, or
# CPTOKEN_TEST_ETCD); not part of make test: it needs a few GB and minutes.
.PHONY: bench-cluster
bench-cluster: $(BUILD)/cptoken $(BUILD)/mod_cptoken.so
	CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(BUILD)/mod_cptoken.so) \
	  $(PYTHON) bench/cluster_bench.py

# The soak with an oracle (t/stress/stress.py; bench/README.md, "Soak"): a
# private httpd per MPM under load while tokens are created, edited, rotated
# and revoked, the store directory is swapped and httpd restarts gracefully;
# every answer is checked. `make stress` runs STRESS_SECONDS (default 300) per
# MPM, one after the other, and prints the figures (also to STRESS_RESULTS
# when set). `make stress-smoke`, part of make test, runs 60 s per MPM with
# the three side by side (the oracle does not depend on speed; their figures
# are not measurements), each MPM's output in $(TEST_LOGS)/stress-MPM.log.
STRESS_SECONDS ?= 300
STRESS_MPMS ?= prefork,worker,event
STRESS_SMOKE_SECONDS ?= 60
STRESS_MODULE ?= $(BUILD)/mod_cptoken.so
STRESS_ENV = CPTOKEN=$(abspath $(BUILD)/cptoken) MOD_CPTOKEN=$(abspath $(STRESS_MODULE))
.PHONY: stress stress-smoke
stress: all
	$(STRESS_ENV) STRESS_SECONDS=$(STRESS_SECONDS) STRESS_MPMS=$(STRESS_MPMS) $(PYTHON) t/stress/stress.py
stress-smoke: all
	@mkdir -p $(TEST_LOGS); rc=0; pids=; \
	for m in prefork worker event; do \
	  $(STRESS_ENV) STRESS_SECONDS=$(STRESS_SMOKE_SECONDS) STRESS_MPMS=$$m $(PYTHON) t/stress/stress.py \
	    > $(TEST_LOGS)/stress-$$m.log 2>&1 & pids="$$pids $$!"; \
	done; \
	for p in $$pids; do wait $$p || rc=1; done; \
	for m in prefork worker event; do sed -n '/^== /,/=> /p' $(TEST_LOGS)/stress-$$m.log; done; \
	exit $$rc

# The demo: a private httpd on https://127.0.0.1:2083 with the module in front
# of an echo backend, a store and a token for alice, all in /tmp/mod_cptoken-demo
# (conf/demo/run.sh). `make demo-stop` stops it and leaves the directory.
.PHONY: demo demo-stop
demo: deps
	$(MAKE) --no-print-directory all
	@BUILD=$(abspath $(BUILD)) bash conf/demo/run.sh

demo-stop:
	@bash conf/demo/stop.sh

# Fuzzing what comes from outside, and what decides: stored records (other
# hosts may write the store), store files with corrupt pages (fuzz_store),
# Authorization headers, networks and client addresses, expiry times, token
# shape and verify_token against a real store,
# and (fuzz_usage, as root) usage stores httpd's group corrupted, and lines a
# hostile child sends, through the path root's cptoken reads them, and (fuzz_etcd)
# what an etcd member answers the mirror agent.
# libFuzzer needs clang. `make fuzz` runs each target for FUZZ_SECONDS
# (FUZZ_SEED: libFuzzer's -seed, random if empty); `make test` runs a short
# smoke of them with seed 1. A crashing input is kept as
# $(BUILD)/fuzz-crash-TARGET-* (rerun it: $(BUILD)/fuzz_TARGET FILE). The inputs
# in t/fuzz/crashes-TARGET, which once crashed, are replayed with its corpus.
FUZZ_SECONDS ?= 20
FUZZ_SEED ?=
FUZZ_TARGETS := record credentials network time token scope cpanel usage etcd store
FUZZ_CXXFLAGS := $(CXXSTD) -O1 -g -fno-sanitize-recover=all -DCPTOKEN_VERSION='"$(VERSION)"'
FUZZ_LIB_OBJS := $(LIB_SRCS:%.cpp=$(BUILD)/fuzz/%.o)
.PHONY: fuzz
.SECONDARY: $(FUZZ_LIB_OBJS)
# The lib compiled once with coverage and sanitizers, linked into every target.
$(BUILD)/fuzz/%.o: %.cpp
	@mkdir -p $(dir $@)
	clang++ $(FUZZ_CXXFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -Ilib -c -o $@ $<
$(BUILD)/fuzz_%: t/fuzz/fuzz_%.cpp $(wildcard t/fuzz/*.hpp) $(FUZZ_LIB_OBJS)
	@mkdir -p $(dir $@)
	clang++ $(FUZZ_CXXFLAGS) -fsanitize=fuzzer,address,undefined -Ilib -o $@ $< $(FUZZ_LIB_OBJS) $(LIBS)
# fuzz_etcd: etcd's answers, with lib/cluster's wire format and simdjson (its client, which needs libcurl,
# is not linked).
$(BUILD)/fuzz_etcd: t/fuzz/fuzz_etcd.cpp $(FUZZ_LIB_OBJS) $(BUILD)/fuzz/lib/cluster/etcd_wire.o
	@mkdir -p $(dir $@)
	clang++ $(FUZZ_CXXFLAGS) -fsanitize=fuzzer,address,undefined -Ilib -o $@ $< $(FUZZ_LIB_OBJS) $(BUILD)/fuzz/lib/cluster/etcd_wire.o \
	  -lsimdjson $(LIBS)
# One rule a target, so that the caller's -j runs them side by side (each is
# CPU-bound for FUZZ_SECONDS: as many at once as cores); -O keeps each one's
# lines together.
FUZZ_RUNS := $(FUZZ_TARGETS:%=fuzz-run-%)
.PHONY: $(FUZZ_RUNS)
fuzz: $(FUZZ_RUNS)
$(FUZZ_RUNS): fuzz-run-%: $(BUILD)/fuzz_%
	@mkdir -p $(BUILD)/fuzz-corpus-$*
	@echo "== fuzz_$* ($(FUZZ_SECONDS) s)"
	@$(BUILD)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $(if $(FUZZ_SEED),-seed=$(FUZZ_SEED)) \
	    -artifact_prefix=$(BUILD)/fuzz-crash-$*- \
	    $(BUILD)/fuzz-corpus-$* t/fuzz/corpus-$* $$(ls -d t/fuzz/crashes-$* 2>/dev/null) > $(BUILD)/fuzz_$*.log 2>&1 \
	    || { tail -40 $(BUILD)/fuzz_$*.log; exit 1; }
	@tail -1 $(BUILD)/fuzz_$*.log
