# Used by CMakeLists.txt when the e2e test cannot run at all: fails the test with MSG.
message(FATAL_ERROR "${MSG}")
