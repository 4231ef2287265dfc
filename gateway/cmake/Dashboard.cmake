# The web dashboard (dashboard/, served at GET /dashboard) compiled into the binary.
#
# tollgate_add_dashboard(<target>) defines the static library <target> holding
# gateway/src/dashboard.cpp and a generated dashboard_assets.cpp with every page file
# (dashboard/*.html|js|css|svg) and the chart library's browser bundle as byte arrays,
# so the gateway serves them with no files on disk and nothing fetched by browsers.
#
# The chart library comes from npm, pinned by dashboard/package-lock.json: the build
# runs `npm ci --omit=dev` on a copy of dashboard/package.json and the lock file in
# <build>/gateway/dashboard_npm, again only when either file changes. node_modules
# never lands in the source tree. npm is required (scripts/setup.sh installs it); a
# missing npm stops the configure step with a message saying so.
set(TOLLGATE_CHART_DIST "node_modules/chart.js/dist/chart.umd.min.js")

function(tollgate_add_dashboard target)
  set(page_dir "${PROJECT_SOURCE_DIR}/dashboard")
  find_program(TOLLGATE_NPM_EXECUTABLE NAMES npm)
  if(NOT TOLLGATE_NPM_EXECUTABLE)
    message(FATAL_ERROR
      "dashboard: npm not found. The build installs the dashboard's chart library from "
      "dashboard/package-lock.json with `npm ci`; install Node.js and npm (scripts/setup.sh "
      "does: apt-get install nodejs npm) and configure again, or set TOLLGATE_NPM_EXECUTABLE.")
  endif()

  set(npm_dir "${CMAKE_CURRENT_BINARY_DIR}/dashboard_npm")
  set(stamp "${npm_dir}/npm-ci.stamp")
  file(MAKE_DIRECTORY "${npm_dir}")
  add_custom_command(
    OUTPUT "${stamp}"
    BYPRODUCTS "${npm_dir}/${TOLLGATE_CHART_DIST}"
    COMMAND ${CMAKE_COMMAND} -E copy "${page_dir}/package.json" "${page_dir}/package-lock.json" "${npm_dir}/"
    COMMAND ${TOLLGATE_NPM_EXECUTABLE} ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
    COMMAND ${CMAKE_COMMAND} -E touch "${stamp}"
    WORKING_DIRECTORY "${npm_dir}"
    DEPENDS "${page_dir}/package.json" "${page_dir}/package-lock.json"
    COMMENT "dashboard: npm ci --omit=dev (chart library pinned by dashboard/package-lock.json)"
    VERBATIM)

  # Adding or removing a page file re-runs CMake (CONFIGURE_DEPENDS); editing one
  # regenerates the source at build time.
  file(GLOB page_files CONFIGURE_DEPENDS
    "${page_dir}/*.html" "${page_dir}/*.js" "${page_dir}/*.css" "${page_dir}/*.svg")
  set(output "${CMAKE_CURRENT_BINARY_DIR}/dashboard_assets.cpp")
  add_custom_command(
    OUTPUT "${output}"
    COMMAND ${CMAKE_COMMAND} "-DPAGE_DIR=${page_dir}" "-DVENDOR_FILE=${npm_dir}/${TOLLGATE_CHART_DIST}"
            "-DOUTPUT=${output}" -P "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/EmbedDashboard.cmake"
    DEPENDS ${page_files} "${stamp}" "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/EmbedDashboard.cmake"
    COMMENT "dashboard: embedding dashboard/ and the chart library"
    VERBATIM)

  add_library(${target} STATIC "${CMAKE_CURRENT_SOURCE_DIR}/src/dashboard.cpp" "${output}")
  target_include_directories(${target} PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/src")
  target_link_libraries(${target} PRIVATE tollgate_core)  # TrimOws
endfunction()
